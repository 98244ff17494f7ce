"""The Debian packages dom0 is made of, per suite, from builder/data/dom0-packages.txt.

Package choice is data so that a new Debian release means editing a list, not code: the list
names metapackages (xen-system-amd64, linux-image-amd64) that each suite resolves to its own
versions, and a line can be limited to some suites where a name differs between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

DOM0_LIST = "data/dom0-packages.txt"
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1
SUITE = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class ListedPackage:
    name: str
    suites: tuple[str, ...] = ()  # empty: every suite

    def wanted_on(self, suite: str) -> bool:
        return not self.suites or suite in self.suites


def parse_package_list(text: str, source: str) -> list[ListedPackage]:
    """`package [suite ...]` per line, `#` comments; a malformed line is an error naming source:line."""
    listed: list[ListedPackage] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name, suites = fields[0], tuple(fields[1:])
        bad = [f for f in (name,) if not PACKAGE.fullmatch(f)] + [s for s in suites if not SUITE.fullmatch(s)]
        if bad:
            raise ValueError(f"{source}:{number}: {bad[0]!r} is not a package or suite name")
        listed.append(ListedPackage(name, suites))
    return listed


def listed_packages() -> list[ListedPackage]:
    return parse_package_list(resources.files("builder").joinpath(DOM0_LIST).read_text(), f"builder/{DOM0_LIST}")


def dom0_packages(suite: str, extra: tuple[str, ...] = ()) -> list[str]:
    """xenlive's own dom0 packages for `suite`, then the profile's `extra` ones not already there."""
    packages = [p.name for p in listed_packages() if p.wanted_on(suite)]
    return packages + [p for p in dict.fromkeys(extra) if p not in packages]

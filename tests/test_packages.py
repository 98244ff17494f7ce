from __future__ import annotations

import re

import pytest

from builder.packages import dom0_packages, listed_packages, parse_package_list


def test_shipped_list_names_no_versions_and_the_xen_metapackage():
    """The suite picks Xen's version: no package of the list may carry one (xen-utils-4.17 did)."""
    names = [p.name for p in listed_packages()]
    assert "xen-system-amd64" in names and "live-boot" in names and "linux-image-amd64" in names
    assert [n for n in names if re.search(r"\d+\.\d+", n)] == []
    assert dom0_packages("bookworm") == dom0_packages("trixie")  # nothing differs between them today


def test_suite_limited_lines_and_extras():
    listed = parse_package_list("# c\nalpha\nbeta  bookworm   # only there\ngamma trixie forky\n", "t.txt")
    assert [(p.name, p.suites) for p in listed] == [
        ("alpha", ()),
        ("beta", ("bookworm",)),
        ("gamma", ("trixie", "forky")),
    ]
    wanted = [p.name for p in listed if p.wanted_on("trixie")]
    assert wanted == ["alpha", "gamma"]
    base = dom0_packages("trixie")
    assert dom0_packages("trixie", ("tcpdump", base[0], "tcpdump")) == [*base, "tcpdump"]


@pytest.mark.parametrize(("line", "bad"), [("Xen-Tools", "'Xen-Tools'"), ("xen-system-amd64 Trixie", "'Trixie'")])
def test_malformed_line_names_file_and_line(line: str, bad: str):
    with pytest.raises(ValueError, match=re.escape(f"t.txt:2: {bad} is not a package or suite name")):
        parse_package_list(f"ok\n{line}\n", "t.txt")


@pytest.mark.integration
@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_list_resolves_against_the_archive(suite: str, tmp_path):
    """apt on the real mirror resolves every package for each supported suite (mmdebstrap --simulate)."""
    from builder.profile import Dom0
    from builder.run import run

    cmd = ["mmdebstrap", "--simulate", "--variant=minbase", "--include=" + ",".join(dom0_packages(suite)),
           suite, str(tmp_path / "unused"), Dom0().mirror]  # fmt: skip
    run(cmd)

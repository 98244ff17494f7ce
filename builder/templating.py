"""One strict jinja2 environment for every template xenlive renders.

A profile's templates come from strangers, so they run sandboxed, see plain data only (see
builder/profile/finalize.py: template_context), and can `{% include %}` only regular files inside
their own overlay, judged after symlinks are resolved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from builder.errors import TemplateError


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    return jinja2.sandbox.SandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


PACKAGE_ENV = _environment(jinja2.PackageLoader("builder", "templates"))


def render(name: str, **context: Any) -> str:
    """Render one of builder/templates/; errors name the template and line."""
    return _render(PACKAGE_ENV, name, context)


MAX_TEMPLATE_BYTES = 1 << 20


class ConfinedLoader(jinja2.BaseLoader):
    """Loads templates from one directory, refusing anything whose real path is outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        path = (self.root / template).resolve()
        if path != self.root and self.root not in path.parents:
            raise jinja2.TemplateNotFound(f"{template} (outside {self.root.name}/)")
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        data = path.read_bytes()[: MAX_TEMPLATE_BYTES + 1]
        if len(data) > MAX_TEMPLATE_BYTES:
            raise jinja2.TemplateNotFound(f"{template} (more than {MAX_TEMPLATE_BYTES} bytes)")
        return data.decode("utf-8", errors="replace"), str(path), lambda: False


def render_file(path: Path, root: Path, **context: Any) -> str:
    """Render a user's template file (an overlay's *.j2) that may include files below `root`."""
    env = _environment(ConfinedLoader(root))
    real, top = path.resolve(), root.resolve()
    if not real.is_relative_to(top):
        raise TemplateError(f"{path}: template outside {root}")
    name = real.relative_to(top).as_posix()
    return _render(env, name, context, shown=str(path))


def _render(env: jinja2.Environment, name: str, context: dict[str, Any], shown: str | None = None) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{shown or e.filename or name}:{e.lineno}: template syntax error: {e.message}") from e
    except jinja2.TemplateError as e:
        raise TemplateError(f"{shown or name}:{_template_line(e, name)}: {e}") from e


def _template_line(exc: BaseException, name: str) -> str:
    tb = exc.__traceback__
    line = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line

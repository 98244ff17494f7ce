"""One strict jinja2 environment for every template xenlive renders."""

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


def render_file(path: Path, **context: Any) -> str:
    """Render a user's template file (an overlay's *.j2)."""
    env = _environment(jinja2.FileSystemLoader(str(path.parent)))
    return _render(env, path.name, context, shown=str(path))


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

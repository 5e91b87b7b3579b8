"""Jinja2 environment: an operator's template folder first, then the templates shipped with us."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jinja2

# HTML templates escape everything; text templates must not (they would show &amp; to customers).
_AUTOESCAPE = jinja2.select_autoescape(enabled_extensions=("html.j2", "html"), default=False)


def builtin_templates_dir() -> Path:
    """Installed: the supportbot.templates package. From a source tree: templates/ at the root."""
    spec = importlib.util.find_spec("supportbot.templates")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    return Path(__file__).resolve().parent.parent / "templates"


def template_environment(override_dir: Path | None = None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if override_dir is not None:
        loaders.append(jinja2.FileSystemLoader(override_dir))
    loaders.append(jinja2.FileSystemLoader(builtin_templates_dir()))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=_AUTOESCAPE, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def builtin_template_names() -> list[str]:
    root = builtin_templates_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.j2"))

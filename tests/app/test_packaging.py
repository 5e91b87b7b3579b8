"""Packaging: pyproject.toml alone says what is installed, and a wheel holds everything the app reads."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("core", "mail_gateway", "bot", "supportbot")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def package_folders() -> set[str]:
    """Every folder with an __init__.py under the four roots, as a dotted package name."""
    return {".".join(init.parent.relative_to(REPO).parts)
            for root in PACKAGE_ROOTS for init in (REPO / root).rglob("__init__.py")}


def test_pyproject_is_the_only_build_config():
    assert not (REPO / "setup.py").exists()
    assert not (REPO / "setup.cfg").exists()


def test_packages_are_found_and_templates_install_inside_supportbot():
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "."} and "find" in setuptools["packages"]  # found, nothing remapped
    assert set(setuptools["packages"]["find"]["include"]) == {f"{root}*" for root in PACKAGE_ROOTS}
    link = REPO / "supportbot" / "templates"
    assert link.is_symlink() and link.resolve() == (REPO / "templates").resolve()
    data = setuptools["package-data"]
    assert set(data["supportbot.templates"]) >= {"**/*.j2", "**/*.css"}
    assert "script.py.mako" in data["core.migrations"]
    assert "config.example.toml" in data["supportbot"]


# Runs the build backend the way pip does (an isolated env with the declared build requirements),
# once for the wheel and once for the editable install that scripts/test makes.
BUILD = textwrap.dedent("""
    import sys
    from build import ProjectBuilder
    from build.env import DefaultIsolatedEnv

    source, out = sys.argv[1], sys.argv[2]
    with DefaultIsolatedEnv() as env:
        builder = ProjectBuilder.from_isolated_env(env, source)
        env.install(builder.build_system_requires)
        for distribution in ("wheel", "editable"):
            env.install(builder.get_requires_for_build(distribution))
            print("built", builder.build(distribution, out), flush=True)
""")


@pytest.mark.slow
def test_the_wheel_holds_templates_migrations_and_example_config_and_builds_without_warnings(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "supportbot-data"))
    out = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-c", BUILD, str(source), str(out)],
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = {m.group(2).strip() for m in re.finditer(r"(\w*Warning): (.+)", output)}
    assert not warnings, output  # not even the notice a package-dir mapping brings to editable installs

    (wheel,) = (w for w in out.glob("supportbot-*.whl") if ".editable-" not in w.name)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"supportbot/templates/{p.relative_to(REPO / 'templates')}"
                 for p in (REPO / "templates").rglob("*") if p.suffix in (".j2", ".css")}
    versions = {f"core/migrations/versions/{p.name}" for p in (REPO / "core/migrations/versions").glob("*.py")}
    assert templates and templates <= names, sorted(templates - names)
    assert versions <= names, sorted(versions - names)
    packages = {f"{package.replace('.', '/')}/__init__.py" for package in package_folders()}
    assert packages <= names, sorted(packages - names)  # every package folder is installed
    assert {"core/migrations/script.py.mako", "core/migrations/env.py", "supportbot/config.example.toml"} <= names
    assert not any(n.startswith(("templates/", "tests/", "bench/", "scripts/")) for n in names), sorted(names)


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def test_heavy_dependencies_are_extras_and_the_test_extra_pulls_in_all_of_them():
    project = pyproject()["project"]
    base = {requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert {requirement_name(r) for r in extras["chart"]} == {"matplotlib"}
    assert {requirement_name(r) for r in extras["postgres"]} == {"asyncpg"}
    assert {requirement_name(r) for r in extras["dkim"]} == {"dkimpy"}
    assert not base & {"matplotlib", "asyncpg", "dkimpy"}
    assert extras["all"] == ["supportbot[chart,postgres,dkim]"]
    assert "supportbot[all]" in extras["test"]


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files that import it, for every import of a module from outside the
    standard library and the project, anywhere in a module (function-level and TYPE_CHECKING too)."""
    found: dict[str, set[str]] = {}
    for root in PACKAGE_ROOTS:
        for path in (REPO / root).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGE_ROOTS:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_comes_from_a_declared_dependency():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    declared = {requirement_name(r) for r in [*project["dependencies"], *extras["chart"], *extras["postgres"],
                                               *extras["dkim"]]}
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports()
    assert {"sqlalchemy", "jinja2", "markupsafe", "discord"} <= set(imports)  # the scan sees them
    problems = []
    for module, files in sorted(imports.items()):
        distributions = {requirement_name(d) for d in providers.get(module, ())}
        where = ", ".join(sorted(files)[:3])
        if not distributions:
            problems.append(f"{module} (imported in {where}) is installed by no distribution")
        elif not distributions & declared:
            problems.append(f"{module} (imported in {where}) comes from {', '.join(sorted(distributions))}, "
                            "which pyproject.toml does not declare")
    assert not problems, "\n".join(problems)


def test_the_readme_says_which_python_the_two_commands_need():
    minimum = re.fullmatch(r">=\s*(\d+\.\d+)", pyproject()["project"]["requires-python"].strip())
    assert minimum, "requires-python is no longer a plain lower bound: update this test and the README"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    two_commands = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    said = two_commands.split("```sh", 1)[0]  # before the first command
    assert f"Python {minimum.group(1)} or newer" in said

"""The package boundaries of docs/architecture.md, checked by reading every import.

core imports no edge, no supportbot and no protocol library; an edge imports no other edge and no
supportbot; nothing outside core imports a private core module (a name starting with "_").
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EDGES = ("mail_gateway", "bot", "web")
PACKAGES = ("core", *EDGES, "supportbot")
# What talks a protocol belongs at an edge; the core stays testable without any of them.
PROTOCOL_LIBRARIES = ("discord", "aiosmtpd", "aiosmtplib", "imapclient", "aiohttp", "dkim", "nh3")


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append((node.lineno, base))
            # `from core.services import _common` names a module too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name.startswith("_")]
    return found


def violations(root: Path) -> list[str]:
    problems: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            where = f"{path.relative_to(root)}"
            for line, module in imports_of(path, root):
                top = module.split(".")[0]
                private = any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:])
                if package == "core":
                    if top in (*EDGES, "supportbot"):
                        problems.append(f"{where}:{line}: core imports {module} (an edge or the app)")
                    elif top in PROTOCOL_LIBRARIES:
                        problems.append(f"{where}:{line}: core imports {module} (a protocol library)")
                    continue
                if top == "core" and private:
                    problems.append(f"{where}:{line}: imports the private core module {module}")
                if package in EDGES and top in EDGES and top != package:
                    problems.append(f"{where}:{line}: the {package} edge imports another edge ({module})")
                if package in EDGES and top == "supportbot":
                    problems.append(f"{where}:{line}: the {package} edge imports the app ({module})")
    return problems


def test_the_packages_keep_their_boundaries() -> None:
    assert violations(REPO) == []


def test_the_contract_catches_each_kind_of_forbidden_import(tmp_path: Path) -> None:
    forbidden = {
        "core/intake/bad.py": "from mail_gateway.parsing import parse_mail\n",
        "core/talks.py": "import discord\n",
        "bot/peek.py": "from core.services._common import record\n",
        "bot/also.py": "from core.services import _common\n",
        "mail_gateway/reach.py": "from bot.format import thread_name\n",
        "mail_gateway/root.py": "from supportbot.app import App\n",
    }
    for name, text in forbidden.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    assert len(found) == len(forbidden), found
    for name in forbidden:
        assert any(problem.startswith(name) for problem in found), name

"""The package's dependency rules (DESIGN: dependencies point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "opscope"
SUBSYSTEMS = {"deploy", "monitor", "report"}
SHARED = {
    "config",
    "store",
    "errors",
    "clock",
    "durations",
    "telemetry",
    "notify",
    "redaction",
}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def area(path: Path) -> str:
    name = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return "cli" if name.startswith("cli_") else name  # cli_deploy.py is part of the CLI


def test_layers() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        own = area(path)
        for module in imports_of(path):
            parts = module.split(".")
            if module.split(".")[0] in ("typer", "click") and own != "cli":
                problems.append(f"{path.name}: only cli may import {module}")
            if parts[0] != "opscope" or len(parts) < 2:
                continue
            target = parts[1]
            if own in SHARED and target in SUBSYSTEMS | {"server", "cli"}:
                problems.append(f"{own}/{path.name} (shared) imports {module}")
            if own in SUBSYSTEMS and target in (SUBSYSTEMS - {own}) | {"server", "cli"}:
                problems.append(f"{own}/{path.name} imports {module}")
            if own == "server" and target == "cli":
                problems.append(f"server/{path.name} imports {module}")
    assert problems == []


def test_the_rules_see_the_package() -> None:
    # Guard against the test passing because it found nothing to check.
    assert {"monitor", "store", "server", "config", "cli"} <= {
        area(p) for p in PACKAGE.rglob("*.py")
    }
    assert "opscope.store" in imports_of(PACKAGE / "monitor" / "running.py")


def test_renderers_see_only_the_document() -> None:
    # Every output format is a function of the ReportDocument alone (report/document.py).
    render = PACKAGE / "report" / "render"
    allowed = ("opscope.report.document", "opscope.report.render", "opscope.errors")
    paths = list(render.rglob("*.py"))
    assert len(paths) >= 6
    problems = [
        f"{path.name} imports {module}"
        for path in paths
        for module in imports_of(path)
        if module.startswith("opscope") and not module.startswith(allowed)
    ]
    assert problems == []

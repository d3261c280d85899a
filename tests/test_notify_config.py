"""The notify section is refused where Alertmanager refuses the same routing (amtool's verdict)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opscope.config import parse_config
from opscope.errors import ConfigFileError
from tests.conftest import require_tool


def amtool_check(tmp_path: Path, route: str) -> subprocess.CompletedProcess[str]:
    """``amtool check-config`` on an Alertmanager configuration with ``route`` under ``route:``."""
    amtool = require_tool("amtool")
    path = tmp_path / "alertmanager.yml"
    path.write_text(f"route:\n  receiver: none\n{route}receivers: [{{name: none}}]\n")
    return subprocess.run(
        [amtool, "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, environ={})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("field", ["group_interval", "repeat_interval"])
def test_zero_intervals_are_refused_like_alertmanager(tmp_path: Path, field: str) -> None:
    checked = amtool_check(tmp_path, f"  {field}: 0s\n")
    assert checked.returncode == 1 and f"{field} cannot be zero" in checked.stdout
    nested = amtool_check(tmp_path, f"  routes: [{{receiver: none, {field}: 0s}}]\n")
    assert nested.returncode == 1 and f"{field} cannot be zero" in nested.stdout

    assert problems(f"notify:\n  {field}: 0s\n") == [
        f"opscope.yaml:2:{len(field) + 5} notify.{field}: cannot be zero "
        "(as in Alertmanager: the group would be notified without pause)"
    ]
    route = (
        "notify:\n"
        "  channels: {hook: {webhook: 'http://127.0.0.1:1/hook'}}\n"
        "  routes:\n"
        "    - channels: [hook]\n"
        f"      {field}: 0s\n"
    )
    (problem,) = problems(route)
    assert problem.startswith(f"opscope.yaml:5:{len(field) + 9} notify.routes[0].{field}: ")


def test_zero_group_wait_is_allowed_like_alertmanager(tmp_path: Path) -> None:
    assert amtool_check(tmp_path, "  group_wait: 0s\n").returncode == 0
    config = parse_config("notify:\n  group_wait: 0s\n", environ={}).config.notify
    assert config.group_wait.total_seconds() == 0

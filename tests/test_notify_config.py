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


@pytest.mark.parametrize(
    ("group_by", "amtool_says"),
    [
        ("['0bad']", 'invalid label name "0bad" in group_by list'),
        ("['team-name']", 'invalid label name "team-name" in group_by list'),
    ],
)
def test_group_by_label_names_are_checked_like_alertmanager(
    tmp_path: Path, group_by: str, amtool_says: str
) -> None:
    checked = amtool_check(tmp_path, f"  group_by: {group_by}\n")
    assert checked.returncode == 1 and amtool_says in checked.stdout
    assert problems(f"notify:\n  group_by: {group_by}\n") == [
        f"opscope.yaml:2:13 notify.group_by: {amtool_says}"
    ]
    route = (
        "notify:\n"
        "  channels: {hook: {webhook: 'http://127.0.0.1:1/hook'}}\n"
        f"  routes: [{{channels: [hook], group_by: {group_by}}}]\n"
    )
    (problem,) = problems(route)
    assert problem.startswith("opscope.yaml:3:") and amtool_says in problem


def test_valid_group_by_is_accepted_like_alertmanager(tmp_path: Path) -> None:
    assert amtool_check(tmp_path, "  group_by: ['...']\n").returncode == 0
    assert amtool_check(tmp_path, "  group_by: [alertname, _x, Team2]\n").returncode == 0
    for group_by in ("['...']", "[alertname, _x, Team2]"):
        parse_config(f"notify:\n  group_by: {group_by}\n", environ={})


def test_apprise_urls_are_checked_by_apprise() -> None:
    assert problems("notify:\n  channels:\n    pager: 'nosuchscheme://foo'\n") == [
        'opscope.yaml:3:12 notify.channels.pager: apprise has no service for "nosuchscheme://" '
        "URLs (see apprise's list of services)"
    ]
    # a known service, but apprise's Slack needs three tokens; the secret is not echoed
    (problem,) = problems("notify:\n  channels:\n    chat: 'slack://s3cret'\n")
    assert problem == (
        "opscope.yaml:3:11 notify.channels.chat: apprise cannot use this slack:// URL: a part "
        "it needs is missing or invalid"
    )
    parse_config(
        "notify:\n  channels:\n    chat: 'slack://T000/B000/XXXX/#alerts'\n"
        "    mail: 'mailtos://ops:pw@smtp.example.com:587?to=ops@example.com'\n",
        environ={},
    )


def test_an_unknown_channel_is_reported_where_it_is_named() -> None:
    text = (
        "notify:\n"
        "  channels:\n"
        "    email: 'mailto://127.0.0.1:25?from=a@example.com&to=b@example.com'\n"
        "  routes:\n"
        "    - channels: [email]\n"
        "    - channels: [email, pager]\n"
        "      continue: true\n"
        "  channels_default: [sms]\n"
    )
    assert problems(text) == [
        'opscope.yaml:6:25 notify.routes[1].channels[1]: unknown channel "pager" (known: email)',
        'opscope.yaml:8:22 notify.channels_default[0]: unknown channel "sms" (known: email)',
    ]


def test_messages_use_the_names_written_in_files() -> None:
    (problem,) = problems(
        "notify:\n  channels: {a: {webhook: 'http://127.0.0.1:1/a'}}\n"
        "  routes: [{channels: [a], contnue: true}]\n"
    )
    assert "continue," in problem and "continue_" not in problem

"""The supervisor's restart policy (pure) and its control protocol seen from a raw socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opscope.deploy.control import STATE_FILE, ChildState
from opscope.deploy.supervisor import (
    EXIT_ALREADY_RUNNING,
    crashes_in_a_row,
    restart_delay,
)
from tests.conftest import free_port, wait_until


def test_restart_delays_follow_the_kubelet_back_off() -> None:
    # kubelet: first restart at once, then 10s doubling, capped at 5 minutes.
    assert [restart_delay(n) for n in range(1, 10)] == [
        0.0,
        10.0,
        20.0,
        40.0,
        80.0,
        160.0,
        300.0,
        300.0,
        300.0,
    ]


def test_ten_minutes_up_starts_the_back_off_over() -> None:
    assert crashes_in_a_row(5, ran_for=599.0) == 6
    assert crashes_in_a_row(5, ran_for=600.0) == 1
    assert crashes_in_a_row(0, ran_for=1.0) == 1


def test_child_state_round_trips_through_json() -> None:
    state = ChildState(
        revision=3,
        version="1.4.2",
        status="backoff",
        pid=None,
        port=41234,
        started_at=1_700_000_000.5,
        restarts=2,
        exit_code=-9,
        restart_at=1_700_000_020.5,
        command=["python3", "app.py"],
        log=Path("/data/revision-3.log"),
        log_tail="boom",
    )
    assert ChildState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert state.uptime(1_700_000_010.0) is None


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A supervisor started by hand (as the client does) on a free port; stopped after."""
    directory = tmp_path / "svc"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "opscope.deploy.supervisor",
        "--dir",
        str(directory),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    subprocess.run(command, check=True, timeout=60)
    try:
        yield directory, port
    finally:
        request(directory, {"op": "stop"})
        wait_until(
            lambda: json.loads((directory / STATE_FILE).read_text())["running"] is False,
            what="the supervisor to stop",
        )
    # A second start for the same directory while it ran would have been refused; now it
    # starts again and stops cleanly, proving the lock and the port were released.
    assert subprocess.run(command, check=False, timeout=60).returncode == 0
    request(directory, {"op": "stop"})


def request(directory: Path, message: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(directory / "control.sock"))
        sock.sendall(json.dumps(message).encode() + b"\n")
        reply: dict[str, object] = json.loads(sock.makefile().readline())
    return reply


def test_a_second_supervisor_for_the_same_directory_is_refused(
    supervisor: tuple[Path, int],
) -> None:
    directory, port = supervisor
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "opscope.deploy.supervisor",
            "--dir",
            str(directory),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == EXIT_ALREADY_RUNNING
    assert "a supervisor already runs" in second.stderr


def test_bad_requests_get_an_error_reply(supervisor: tuple[Path, int]) -> None:
    directory, port = supervisor
    assert request(directory, {"op": "promote"}) == {"ok": False, "error": "nothing is staged"}
    assert request(directory, {"op": "launch"}) == {"ok": False, "error": "unknown op 'launch'"}
    reply = request(directory, {"op": "stage", "revision": 1, "spec": {"argv": []}})
    assert reply == {"ok": False, "error": "spec.argv must be a non-empty list of strings"}
    state = request(directory, {"op": "state"})
    assert (state["ok"], state["front"], state["current"], state["staged"]) == (
        True,
        f"127.0.0.1:{port}",
        None,
        None,
    )
    # With nothing behind it, the front port accepts and then closes the connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.recv(1) == b""

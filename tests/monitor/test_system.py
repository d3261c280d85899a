"""System metrics: psutil readings, CPU %, counter rates with resets, the first-cycle rule."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from opscope.config import SystemConfig
from opscope.monitor.collectors import SystemCollector
from opscope.monitor.collectors.system import (
    counter_rate,
    cpu_busy_percent,
    established_from_proc,
)
from opscope.store import Store, instant_query, parse_selector

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_cpu_percent_is_busy_over_total_as_psutil_computes_it() -> None:
    before = Times(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)
    after = Times(130, 0, 60, 850, 60, 0, 0, 0, 0, 0)
    # busy delta = (130+60) - (100+50) = 40; total delta = 1100 - 1000 = 100 → 40 %
    assert cpu_busy_percent(before, after) == 40.0


def test_cpu_percent_excludes_guest_time_already_counted_in_user() -> None:
    before = Times(100, 0, 0, 100, 0, 0, 0, 0, 0, 0)
    after = Times(150, 0, 0, 150, 0, 0, 0, 0, 40, 0)  # 40 of the 50 user seconds were guest
    # total delta = (150+150+40-40) - 200 = 100; busy delta = 50 → 50 %
    assert cpu_busy_percent(before, after) == 50.0
    assert cpu_busy_percent(after, after) == 0.0


def test_counter_rate_handles_resets_like_prometheus() -> None:
    assert counter_rate(1000, 3000, 2.0) == 1000.0
    assert counter_rate(5000, 200, 2.0) == 100.0  # reset: the counter restarted from 0
    assert counter_rate(5, 5, 0.0) == 0.0


async def test_first_cycle_has_no_cpu_or_network_value_then_both_appear(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        collector = SystemCollector(
            config=SystemConfig(), interval=1.0, resolve=store.series_id, hostname="testhost"
        )
        store.append(await collector.collect(1000.0))
        names = {
            r.ref.name for r in instant_query(store, parse_selector('{job="system"}'), 1_000_000)
        }
        assert "cpu_usage" not in names  # psutil's first reading is meaningless: not stored as 0
        assert "network_receive_bytes_per_second" not in names
        assert {"memory_usage", "load1"} <= names
        store.append(await collector.collect(1001.0))
        now = {
            r.ref.name: r for r in instant_query(store, parse_selector('{job="system"}'), 1_001_000)
        }
        assert 0.0 <= now["cpu_usage"].value <= 100.0
        assert dict(now["cpu_usage"].ref.labels) == {"instance": "testhost", "job": "system"}
        devices = [d for d in psutil.net_io_counters(pernic=True) if d != "lo"]
        if devices:
            rx = instant_query(store, parse_selector("network_receive_bytes_per_second"), 1_001_000)
            assert {dict(r.ref.labels)["device"] for r in rx} == set(devices)
            assert all(r.value >= 0 for r in rx)
        memory = psutil.virtual_memory().percent
        assert abs(now["memory_usage"].value - memory) < 5.0


def test_disk_usage_skips_pseudo_filesystems_and_matches_psutil() -> None:
    collector = SystemCollector(
        config=SystemConfig(), interval=1.0, resolve=lambda name, labels: 0, hostname="h"
    )
    disks = {
        labels["mount"]: (labels["fstype"], value)
        for name, labels, value in collector.sample()
        if name == "disk_usage"
    }
    assert disks, "the root filesystem of this machine is a real disk"
    pseudo = {"proc", "sysfs", "tmpfs", "devtmpfs", "cgroup", "cgroup2", "devpts", "mqueue"}
    assert not any(fstype in pseudo for fstype, _ in disks.values())
    for mount, (_, percent) in disks.items():
        assert abs(percent - psutil.disk_usage(mount).percent) < 1.0


def test_established_connections_are_counted_from_proc_tables(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [  # LISTEN, ESTABLISHED, TIME_WAIT, ESTABLISHED
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n",
        "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n",
        "   2: 0100007F:1F90 0100007F:D2F2 06 00000000:00000000 03:00000F3E 00000000     0        0 0 3 0\n",
        "   3: 0100007F:D2F4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n",
    ]
    (tmp_path / "tcp").write_text(header + "".join(rows))
    (tmp_path / "tcp6").write_text(header + rows[1])
    assert established_from_proc(tmp_path) == 3
    (tmp_path / "tcp6").unlink()  # a kernel without IPv6
    assert established_from_proc(tmp_path) == 2


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="not Linux: no /proc/net/tcp")
def test_proc_count_agrees_with_psutil_on_this_machine() -> None:
    proc = Path("/proc/net")
    by_psutil = sum(1 for c in psutil.net_connections("tcp") if c.status == "ESTABLISHED")
    assert abs(established_from_proc(proc) - by_psutil) <= 2  # sockets come and go in between

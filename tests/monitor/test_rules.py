"""Rule evaluation and the alert lifecycle over a real store, on an injected timeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opscope.config import parse_config
from opscope.errors import ConfigFileError
from opscope.monitor.alerts import Alert, Candidate, step
from opscope.monitor.rules import RuleEngine, compile_groups
from opscope.store import STALE_NAN, Batch, Store, instant_query, label_set, parse_selector

MIN = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def engine_for(store: Store, rules_yaml: str) -> RuleEngine:
    loaded = parse_config(f"monitor:\n  interval: 1m\n  rules:\n{rules_yaml}", environ={})
    return RuleEngine(store, compile_groups(loaded.rule_groups))


def put(store: Store, name: str, labels: dict[str, str], t: float, value: float) -> None:
    sid = store.series_id(name, label_set(labels))
    store.append([Batch(f"in/{name}", int(t * 1000), np.array([sid]), np.array([value]))])


def run(engine: RuleEngine, t: float) -> list[tuple[str, str]]:
    (group,) = engine.groups
    result = engine.evaluate(group, t)
    return [(c.kind, c.alert.name) for c in result.changes]


def states(engine: RuleEngine) -> list[str]:
    return [a.state for rule in engine.rules for a in rule.alerts.values()]


DISK = "    - {alert: DiskFull, expr: 'disk_used_pct > 90', for: 3m, severity: critical}\n"


def test_staleness_resolves_and_a_new_breach_is_a_new_alert(store: Store) -> None:
    engine = engine_for(store, DISK)
    timeline = {m: 95.0 for m in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)}
    timeline[5] = STALE_NAN
    seen = {}
    for minute in range(11):
        put(store, "disk_used_pct", {"instance": "db1"}, minute * MIN, timeline[minute])
        seen[minute] = run(engine, minute * MIN)
    assert seen[0] == [("pending", "DiskFull")]
    assert seen[3] == [("firing", "DiskFull")]
    assert seen[5] == [("resolved", "DiskFull")]
    assert seen[6] == [("pending", "DiskFull")]
    assert seen[9] == [("firing", "DiskFull")]
    assert all(seen[m] == [] for m in (1, 2, 4, 7, 8, 10))
    alert = next(a for a in engine.rules[0].alerts.values() if a.state == "firing")
    assert alert.active_at == 6 * MIN and alert.fired_at == 9 * MIN
    assert dict(alert.labels) == {
        "alertname": "DiskFull",
        "instance": "db1",
        "severity": "critical",
    }


def test_alerts_series_are_written_like_prometheus(store: Store) -> None:
    engine = engine_for(store, DISK)
    for minute in range(5):
        put(store, "disk_used_pct", {"instance": "db1"}, minute * MIN, 95.0)
        run(engine, minute * MIN)
    firing = instant_query(
        store, parse_selector('ALERTS{alertname="DiskFull"}'), int(4 * MIN * 1000)
    )
    assert [(dict(s.ref.labels)["alertstate"], s.value) for s in firing] == [("firing", 1.0)]
    # the pending series went stale when the alert fired (its label set changed)
    pending = instant_query(
        store, parse_selector('ALERTS{alertstate="pending"}'), int(4 * MIN * 1000)
    )
    assert pending == []
    for_state = instant_query(store, parse_selector("ALERTS_FOR_STATE"), int(4 * MIN * 1000))
    assert [s.value for s in for_state] == [0.0]  # ActiveAt, Unix seconds
    put(store, "disk_used_pct", {"instance": "db1"}, 5 * MIN, 10.0)
    assert run(engine, 5 * MIN) == [("resolved", "DiskFull")]
    assert instant_query(store, parse_selector("ALERTS"), int(5 * MIN * 1000)) == []


def test_nan_ratio_never_fires_and_counter_resets_are_not_bursts(store: Store) -> None:
    engine = engine_for(
        store,
        (
            "    - {alert: Slow, expr: 'latency_sum / latency_count > 0.5'}\n"
            "    - {alert: Burst, expr: 'rate(req_total[5m]) > 5'}\n"
        ),
    )
    put(store, "latency_sum", {"job": "api"}, 0, 0.0)
    put(store, "latency_count", {"job": "api"}, 0, 0.0)
    assert run(engine, 0) == []
    put(store, "latency_sum", {"job": "api"}, MIN, 3.0)
    put(store, "latency_count", {"job": "api"}, MIN, 4.0)
    assert ("firing", "Slow") in run(engine, MIN)
    for minute, value in enumerate([100, 160, 220, 10, 70]):
        put(store, "req_total", {"job": "api"}, minute * MIN, float(value))
    for minute in range(2, 7):
        assert ("pending", "Burst") not in run(engine, minute * MIN)


def test_hovering_values_give_one_firing_and_one_resolution(store: Store) -> None:
    engine = engine_for(
        store, ("    - {alert: Hot, expr: 'temperature > 50', for: 1m, keep_firing_for: 5m}\n")
    )
    kinds = []
    t = 0.0
    for i in range(180):  # 30 minutes, every 10 s: 2 minutes hot, then 49/51 in 30 s runs
        value = 51.0 if i < 12 or (i // 3) % 2 == 0 else 49.0
        put(store, "temperature", {"room": "a"}, t, value)
        kinds += [k for k, _ in run(engine, t)]
        t += 10
    for _ in range(40):  # then it cools down for good
        put(store, "temperature", {"room": "a"}, t, 20.0)
        kinds += [k for k, _ in run(engine, t)]
        t += 10
    assert kinds.count("firing") == 1
    assert kinds.count("resolved") == 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    rules = "    - {alert: DiskFull, expr: 'disk_used_pct > 90', for: 3m}\n"
    with Store.open(tmp_path) as store:
        engine = engine_for(store, rules)
        for minute in range(2):
            put(store, "disk_used_pct", {"instance": "db1"}, minute * MIN, 95.0)
            run(engine, minute * MIN)
        assert states(engine) == ["pending"]
    with Store.open(tmp_path) as store:  # a new process
        engine = engine_for(store, rules)
        assert engine.restore(now=2 * MIN) == 1
        put(store, "disk_used_pct", {"instance": "db1"}, 2 * MIN, 95.0)
        put(store, "disk_used_pct", {"instance": "db1"}, 3 * MIN, 95.0)
        assert run(engine, 2 * MIN) == []
        assert run(engine, 3 * MIN) == [("firing", "DiskFull")]  # pending progress kept
    with Store.open(tmp_path) as store:
        engine = engine_for(store, rules)
        assert engine.restore(now=3 * MIN + 7200) == 0  # down longer than the tolerance


def test_recording_rules_write_series(store: Store) -> None:
    engine = engine_for(store, "    - {record: 'job:up:sum', expr: 'sum by (job) (up)'}\n")
    put(store, "up", {"job": "a", "instance": "1"}, 0, 1.0)
    put(store, "up", {"job": "a", "instance": "2"}, 0, 1.0)
    run(engine, 0)
    (sample,) = instant_query(store, parse_selector("job:up:sum"), 0)
    assert (dict(sample.ref.labels), sample.value) == ({"job": "a"}, 2.0)


def test_templates_see_labels_and_value(store: Store) -> None:
    engine = engine_for(
        store,
        (
            "    - alert: HighCPU\n"
            "      expr: cpu_usage > 80\n"
            "      labels: {team: '{{ $labels.instance }}-ops'}\n"
            "      annotations: {summary: 'CPU {{ $value | humanize }}% on {{ $labels.instance }}'}\n"
        ),
    )
    put(store, "cpu_usage", {"instance": "web1"}, 0, 93.456)
    run(engine, 0)
    (alert,) = engine.rules[0].alerts.values()
    assert dict(alert.labels)["team"] == "web1-ops"
    assert dict(alert.annotations) == {"summary": "CPU 93.46% on web1"}


def test_unsupported_constructs_are_refused_at_load_with_rule_and_position() -> None:
    loaded = parse_config(
        "monitor:\n  rules:\n"
        "    - {alert: Top, expr: 'topk(3, cpu_usage) > 1'}\n"
        "    - {alert: T, expr: 'up == 0', annotations: {x: '{{ if $value }}y{{ end }}'}}\n",
        environ={},
    )
    with pytest.raises(ConfigFileError) as info:
        compile_groups(loaded.rule_groups)
    # positioned at the value at fault: expr's on line 3, column 26; x's on line 4, column 52
    assert [str(p) for p in info.value.problems] == [
        'opscope.yaml:3:26 monitor.rules[0].expr: rule "Top": the aggregation topk() is not '
        "supported",
        "opscope.yaml:4:52 monitor.rules[1].annotations.x: rule \"T\": the template action 'if' "
        "is not supported",
    ]


def test_keep_firing_for_and_retention_in_the_pure_step() -> None:
    labels = (("alertname", "A"),)
    hit = [Candidate(labels, (), 1.0)]
    active: dict = {}
    active, changes = step(active, hit, now=0, hold=0, keep_firing_for=120)
    assert [c.kind for c in changes] == ["pending", "firing"]
    active, changes = step(active, [], now=60, hold=0, keep_firing_for=120)  # gone since 60
    assert changes == [] and active[labels].state == "firing"
    active, changes = step(active, [], now=120, hold=0, keep_firing_for=120)  # 60 s < 120 s
    assert changes == [] and active[labels].state == "firing"
    active, changes = step(active, [], now=180, hold=0, keep_firing_for=120)  # 120 s: over
    assert [c.kind for c in changes] == ["resolved"]
    resolved: Alert = active[labels]
    assert resolved.resolved_at == 180
    active, _ = step(active, [], now=180 + 15 * 60 + 1, hold=0)
    assert active == {}  # forgotten after the 15-minute retention

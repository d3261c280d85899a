"""Deploy overhead: 20 services, parallelism 4, against the Kubernetes API emulator; and the time
from a crash-looping pod to a failed deploy.

The emulator of the deploy tests (kmock plus server-side apply, generations, watches and the
service proxy) runs in its own process (``bench/_kube_emulator.py``) and plays the Deployment
controller: every new generation is rolled out as soon as it is seen. It notes, per Deployment
generation, when the apply arrived and when the controller reported the rollout complete: that
span is *the rollout itself*, and what a client spends beyond it is its *overhead*.

**(a) overhead per service.** Rounds of ``deploy_stack`` (what ``opscope deploy --all`` runs)
over 20 services with parallelism 4: the first round installs, the next ones upgrade (a new
version each, so each round is a real rollout). Per service, overhead = the deploy's duration
(lock, preflight, apply of Deployment + Service + PodDisruptionBudget, the wait, the health
check through the service proxy, the revision Secret and the lock's release) − its rollout.
**Baseline**: the same 20 services' manifests (rendered by opscope), 4 at a time, through
``kubectl apply --server-side`` followed by ``kubectl rollout status`` — the usual CI script,
without lock, history or health check. Target: ≤ 100 ms per service (median).

**(b) crash-loop detection.** A service is upgraded to an image whose pod crash-loops
(``CrashLoopBackOff``, 3 restarts) while the Deployment carries no deadline condition. Measured:
from the controller's creation of that pod to opscope's failure verdict (the progress event
that reports it), with the default poll interval of 2 s. Target: ≤ one poll interval. Baseline:
``kubectl rollout status --timeout 5s`` on the same Deployment is still waiting when its
timeout ends — without one it waits for ``progressDeadlineSeconds`` (600 s by default), and so
does ``helm upgrade --wait``.

Run: ``.venv/bin/python bench/deploy.py [--rounds N] [--json]`` (needs ``kubectl`` on the PATH
for the baselines; without it they are skipped and said so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from opscope.config import parse_config
from opscope.config.models import OpscopeConfig
from opscope.deploy.manifests import render_manifests
from opscope.deploy.rollout import Deployer, Progress
from opscope.deploy.spec import ServiceSpec, service_spec
from opscope.deploy.stack import deploy_stack, open_backend

SERVICES = 20
PARALLELISM = 4
NAMESPACE = "bench"
HERE = Path(__file__).resolve().parent


def config_text(services: int, version: str) -> str:
    lines = [
        "project: bench",
        "environments:",
        "  bench:",
        f"    namespace: {NAMESPACE}",
        "    replicas: 2",
        "    resources: {cpu: 100m, memory: 128Mi}",
        "    kubernetes: {kubeconfig: kubeconfig}",
        "services:",
    ]
    for i in range(services):
        lines.append(
            f'  svc-{i:02d}: {{image: "example/svc-{i:02d}:{version}", port: 8080, '
            "health_check: /healthz}"
        )
    lines += [
        "  crasher: {image: 'example/crasher:1.0.0', port: 8080, health_check: /healthz}",
        "deploy:",
        f"  parallelism: {PARALLELISM}",
        "  poll_interval: 2s",
        "  timeout: 2m",
    ]
    return "\n".join(lines) + "\n"


def load(base: Path, version: str) -> OpscopeConfig:
    text = config_text(SERVICES, version)
    return parse_config(text, filename=str(base / "opscope.yaml"), environ={}).config


class Emulator:
    """The emulator process (see ``_kube_emulator.py``)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "_kube_emulator.py"), str(kubeconfig), NAMESPACE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the emulator did not start")

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline()

    def times(self) -> dict[str, dict[str, float]]:
        return json.loads(self.ask("times"))  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def rollout_seconds(times: dict[str, dict[str, float]], name: str, generation: int) -> float:
    entry = times[f"{name}/{generation}"]
    return entry["rolled"] - entry["applied"]


async def opscope_round(
    base: Path, version: str, events: list[tuple[float, Progress]]
) -> list[tuple[str, float]]:
    """One ``deploy --all`` of the 20 services at ``version``: (Deployment name, seconds)."""
    config = load(base, version)
    specs = [service_spec(config, "bench", f"svc-{i:02d}", base) for i in range(SERVICES)]
    async with open_backend(config, "bench", base) as backend:
        deployer = Deployer(
            backend, config.deploy, progress=lambda p: events.append((time.time(), p))
        )
        result = await deploy_stack(deployer, specs, parallelism=PARALLELISM)
    if result.exit_code != 0:
        raise RuntimeError(f"deploy failed: {result.to_json()}")
    return [(f"svc-{r.service[4:]}", r.duration) for r in result.results]


def kubectl_round(base: Path, specs: list[ServiceSpec], kubeconfig: Path) -> list[float]:
    """Apply + rollout status per service, 4 at a time: seconds per service."""

    def one(spec: ServiceSpec) -> float:
        path = base / f"kc-{spec.service}.yaml"
        manifests = [
            m
            for m in render_manifests(spec, "bench")
            if m["kind"] in ("Deployment", "Service", "PodDisruptionBudget")
        ]
        # the same objects under other names (and labels), beside opscope's
        path.write_text(yaml.safe_dump_all(manifests).replace(spec.service, "kc-" + spec.service))
        env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(base)}
        started = time.perf_counter()
        for argv in (
            ["kubectl", "apply", "--server-side", "--validate=false", "-f", str(path)],
            ["kubectl", "rollout", "status", f"deployment/kc-{spec.service}", "-n", NAMESPACE],
        ):
            subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
        return time.perf_counter() - started

    with ThreadPoolExecutor(PARALLELISM) as pool:
        return list(pool.map(one, specs))


async def crash_detection(
    base: Path, emulator: Emulator, kubeconfig: Path, kubectl: bool
) -> dict[str, Any]:
    """(b): seconds from the crash-looping pod to opscope's failure verdict."""
    config = load(base, "1.0.0")
    good = service_spec(config, "bench", "crasher", base)
    bad_image = "example/crasher:2.0.0"
    emulator.ask(f"mode {bad_image} crashloop")
    bad = service_spec(
        parse_config(
            config_text(SERVICES, "1.0.0").replace("example/crasher:1.0.0", bad_image),
            filename=str(base / "opscope.yaml"),
            environ={},
        ).config,
        "bench",
        "crasher",
        base,
    )
    events: list[tuple[float, Progress]] = []
    async with open_backend(config, "bench", base) as backend:
        deployer = Deployer(
            backend, config.deploy, progress=lambda p: events.append((time.time(), p))
        )
        first = await deployer.deploy(good)
        started = time.time()
        result = await deployer.deploy(bad)
    times = emulator.times()
    generation = max(int(k.split("/")[1]) for k in times if k.startswith("crasher/") and k)
    crashed_at = times[f"crasher/{generation - 1}"]["rolled"]  # the bad version's generation
    noticed = next(t for t, p in events if t >= started and "CrashLoopBackOff" in p.message)
    out: dict[str, Any] = {
        "first_outcome": first.outcome,
        "outcome": result.outcome,
        "detect_s": noticed - crashed_at,
        "deploy_s": result.duration,
        "poll_interval_s": config.deploy.poll_interval.total_seconds(),
    }
    if kubectl:
        # the bad version again, kubectl's way: it waits and does not fail fast
        emulator.ask("mode example/crasher:3.0.0 crashloop")
        manifests = render_manifests(
            service_spec(
                parse_config(
                    config_text(SERVICES, "1.0.0").replace(
                        "example/crasher:1.0.0", "example/crasher:3.0.0"
                    ),
                    filename=str(base / "opscope.yaml"),
                    environ={},
                ).config,
                "bench",
                "crasher",
                base,
            ),
            "bench",
        )
        path = base / "crasher.yaml"
        path.write_text(yaml.safe_dump_all([m for m in manifests if m["kind"] == "Deployment"]))
        env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(base)}
        subprocess.run(
            ["kubectl", "apply", "--server-side", "--force-conflicts", "--validate=false",
             "-f", str(path)],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        started = time.time()
        waited = subprocess.run(
            ["kubectl", "rollout", "status", "deployment/crasher", "-n", NAMESPACE,
             "--timeout=5s"],
            check=False, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out["kubectl_waited_s"] = time.time() - started
        out["kubectl_exit"] = waited.returncode
        out["kubectl_said"] = (waited.stderr or waited.stdout).strip().splitlines()[-1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="upgrade rounds after the install")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    kubectl = shutil.which("kubectl") is not None
    log = sys.stderr if args.json else sys.stdout

    with tempfile.TemporaryDirectory(prefix="opscope-bench-deploy-") as tmp:
        base = Path(tmp)
        kubeconfig = base / "kubeconfig"
        emulator = Emulator(kubeconfig)
        try:
            overheads: list[float] = []
            rollouts: list[float] = []
            walls: list[float] = []
            events: list[tuple[float, Progress]] = []
            for round_ in range(args.rounds + 1):
                version = f"1.0.{round_}"
                started = time.perf_counter()
                durations = asyncio.run(opscope_round(base, version, events))
                walls.append(time.perf_counter() - started)
                times = emulator.times()
                for name, seconds in durations:
                    rollout = rollout_seconds(times, name, round_ + 1)
                    if round_ > 0:  # upgrades; the install round is a warm-up
                        overheads.append(seconds - rollout)
                        rollouts.append(rollout)
                print(
                    f"opscope round {round_} ({'install' if round_ == 0 else 'upgrade'} "
                    f"{version}): {walls[-1]:.2f} s for {SERVICES} services",
                    file=log,
                )
            baseline: list[float] = []
            baseline_rollouts: list[float] = []
            if kubectl:
                config = load(base, "1.0.0")
                for round_ in range(args.rounds + 1):
                    version = f"2.0.{round_}"
                    config = load(base, version)
                    specs = [
                        service_spec(config, "bench", f"svc-{i:02d}", base) for i in range(SERVICES)
                    ]
                    started = time.perf_counter()
                    spent = kubectl_round(base, specs, kubeconfig)
                    wall = time.perf_counter() - started
                    times = emulator.times()
                    if round_ > 0:
                        for i, one in enumerate(spent):
                            rollout = rollout_seconds(times, f"kc-svc-{i:02d}", round_ + 1)
                            baseline.append(one - rollout)
                            baseline_rollouts.append(rollout)
                    print(f"kubectl round {round_}: {wall:.2f} s for {SERVICES} services", file=log)
            crash = asyncio.run(crash_detection(base, emulator, kubeconfig, kubectl))
        finally:
            emulator.close()

    median = statistics.median(overheads)
    p90 = statistics.quantiles(overheads, n=10)[-1]
    result: dict[str, Any] = {
        "services": SERVICES,
        "parallelism": PARALLELISM,
        "upgrade_rounds": args.rounds,
        "opscope_overhead_ms_median": round(median * 1000, 1),
        "opscope_overhead_ms_p90": round(p90 * 1000, 1),
        "opscope_overhead_ms_max": round(max(overheads) * 1000, 1),
        "rollout_ms_median": round(statistics.median(rollouts) * 1000, 1),
        "opscope_wall_s_per_round": [round(w, 2) for w in walls],
        "crash": {k: round(v, 3) if isinstance(v, float) else v for k, v in crash.items()},
        "target_ms": 100,
        "met": median <= 0.1 and crash["detect_s"] <= crash["poll_interval_s"],
    }
    if baseline:
        result["kubectl_overhead_ms_median"] = round(statistics.median(baseline) * 1000, 1)
        result["kubectl_rollout_ms_median"] = round(statistics.median(baseline_rollouts) * 1000, 1)
        result["ratio_opscope_to_kubectl"] = round(median / statistics.median(baseline), 2)
    if args.json:
        print(json.dumps(result))
        return
    print(
        "opscope overhead per service beyond the rollout: median "
        f"{result['opscope_overhead_ms_median']} ms, p90 {result['opscope_overhead_ms_p90']} ms, "
        f"max {result['opscope_overhead_ms_max']} ms "
        f"(rollout itself: median {result['rollout_ms_median']} ms)"
    )
    if baseline:
        print(
            f"kubectl apply --server-side + rollout status: median "
            f"{result['kubectl_overhead_ms_median']} ms beyond the rollout; "
            f"ratio opscope/kubectl {result['ratio_opscope_to_kubectl']}"
        )
    else:
        print("kubectl not found: no baseline")
    print(
        f"crash loop: detected {crash['detect_s'] * 1000:.0f} ms after the pod crashed "
        f"(poll interval {crash['poll_interval_s']:.0f} s), outcome {crash['outcome']}"
    )
    if "kubectl_waited_s" in crash:
        print(
            f"kubectl rollout status --timeout=5s: exit {crash['kubectl_exit']} after "
            f"{crash['kubectl_waited_s']:.1f} s: {crash['kubectl_said']}"
        )
    print(
        f"deploy: overhead median {median * 1000:.0f} ms per service (target ≤ 100 ms), crash "
        f"detected in {crash['detect_s'] * 1000:.0f} ms (target ≤ "
        f"{crash['poll_interval_s']:.0f} s): {'met' if result['met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

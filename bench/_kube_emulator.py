"""The Kubernetes API emulator of the deploy tests, run as a separate process for ``deploy.py``.

Usage: ``python bench/_kube_emulator.py KUBECONFIG NAMESPACE``. Writes a kubeconfig for the
emulator, plays the Deployment controller for NAMESPACE (every new generation rolled out at
once), prints ``ready`` and then answers lines on stdin:

* ``times`` → one JSON line: per ``name/generation`` the wall-clock time the generation was
  applied, the time the controller reported it complete (or its pod crash-looping);
* ``mode IMAGE MODE`` → from now on, Deployments running IMAGE roll out in MODE (``ready``,
  ``crashloop``, ``unavailable``: see ``tests/deploy/cluster.py``); answers ``ok``;
* EOF → exit.

Running it in its own process keeps the emulator's and the controller's CPU time out of the
measured process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.deploy.cluster import AutoController, Controller, RunningCluster


class TimedController(Controller):
    """The tests' controller, noting when each generation's rollout step ended."""

    def __init__(self, cluster: RunningCluster, times: dict[str, dict[str, float]]) -> None:
        super().__init__(cluster)
        self.times = times

    def roll(self, namespace: str, name: str, mode: str = "ready") -> dict[str, Any]:
        generation = self.deployment(namespace, name)["metadata"]["generation"]
        rs = super().roll(namespace, name, mode)
        self.times.setdefault(f"{name}/{generation}", {})["rolled"] = time.time()
        return rs


def main() -> int:
    kubeconfig, namespace = Path(sys.argv[1]), sys.argv[2]
    times: dict[str, dict[str, float]] = {}
    cluster = RunningCluster()
    cluster.kubeconfig(kubeconfig, namespace=namespace)
    auto = AutoController(cluster, namespace)
    auto.controller = TimedController(cluster, times)
    with auto:
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if words == ["times"]:
                stored = cluster.call(lambda: dict(cluster.cluster.stored_at))
                for (kind, name, generation), at in stored.items():
                    if kind == "Deployment":
                        times.setdefault(f"{name}/{generation}", {})["applied"] = at
                print(json.dumps(times), flush=True)
            elif len(words) == 3 and words[0] == "mode":
                auto.modes[words[1]] = words[2]
                print("ok", flush=True)
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

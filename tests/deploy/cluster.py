"""A Kubernetes API emulator for deploy tests and benchmarks, built on kmock.

kmock's :class:`~kmock.KubernetesEmulator` stores objects and serves get/list/watch/create/
merge-patch, but has no controllers, no server-side apply of missing objects and no
``metadata.generation``. :class:`Cluster` adds what the API server itself does and deploys rely
on: server-side apply (create when missing, replace the applier's fields, keep ``status``),
``dryRun=All``, ``metadata.generation`` bumped on spec changes, ``resourceVersion`` with
optimistic concurrency on PUT, label and field selectors on lists, and the service proxy
(answered like the API server: 503 when the Service has no ready pod).

The Deployment controller is played by :class:`Controller`, which tests drive explicitly:
``controller.roll(...)`` creates the ReplicaSet of the current template and its pods and PATCHes
the statuses as the real controller would, in one of a few modes (ready, crash-looping,
never-available). Tests that need exact counters PATCH ``/status`` themselves.

The server runs in a thread with its own event loop, on a free loopback port, so that both
in-process code and ``opscope`` subprocesses can reach it through a kubeconfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import httpx
import kmock
import yaml
from kmock._internal.dicts import merge_patch_dict

APPLY = "application/apply-patch+yaml"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj: Any, status: int = 200) -> aiohttp.web.Response:
    """A JSON response with the API server's exact Content-Type (clients such as lightkube
    compare it verbatim: ``application/json`` without a charset)."""
    return aiohttp.web.Response(
        body=json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return _json(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
        status=code,
    )


def _matches_labels(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _matches_fields(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, value = term.split("=", 1)
        if str(_field(obj, key.rstrip("="))) != value:
            return False
    return True


def template_hash(template: dict[str, Any]) -> str:
    """A pod-template-hash in Kubernetes' alphabet (the real one is FNV-32a of the template)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server behaviour deploys rely on (see the module doc)."""

    versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000))
    #: Every write request: (method, path, query, content-type, body) — for "nothing applied".
    writes: list[tuple[str, str, dict[str, str], str, Any]] = attrs.field(factory=list)
    #: Service proxy answers per (namespace, service): (status, body). Default 200 {"status":"ok"}.
    health: dict[tuple[str, str], tuple[int, str]] = attrs.field(factory=dict)
    #: When each (kind, name, generation) was first stored (wall clock): for benchmarks.
    stored_at: dict[tuple[str, str, int], float] = attrs.field(factory=dict)

    def _key(self, request: kmock.Request, name: str | None = None) -> Any:
        return (request.resource, request.namespace, name or request.name)

    def _get(self, key: Any) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        found: dict[str, Any] = copy.deepcopy(self._objects[key].raw)
        return found

    async def _store(self, key: Any, obj: dict[str, Any], event: str) -> None:
        meta = obj.get("metadata", {})
        stamp = (obj.get("kind", ""), meta.get("name", ""), meta.get("generation", 0))
        self.stored_at.setdefault(stamp, time.time())
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        await self._buses[key[0]].put({"type": event, "object": obj})

    def _stamp_metadata(
        self, obj: dict[str, Any], old: dict[str, Any] | None, namespace: str | None
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_stamp()
            meta["generation"] = 1
        else:
            old_meta = old.get("metadata", {})
            for key in ("uid", "creationTimestamp"):
                meta[key] = old_meta.get(key)
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }
            meta["generation"] = old_meta.get("generation", 1) + (1 if changed else 0)
        meta["resourceVersion"] = str(next(self.versions))
        return obj

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock keeps every request for its assertion DSL and scans that list on each new one
        # (quadratic over a long run); this emulator asserts on ``writes`` instead, so only the
        # recent requests (those still being handled) are kept.
        for history in [self._requests] + [payload._requests for payload in self._payloads]:
            if len(history) > 32:
                del history[:-8]
        if request.resource is None or not request.resource.plural:  # discovery
            return await self._discovery(request)
        method = str(request.method.value).upper()
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            ctype = request.headers.get("Content-Type", "")
            self.writes.append(
                (method, request.url.path, dict(request.params), ctype, request.data)
            )
        if request.subresource and request.subresource.startswith("proxy"):
            return self._proxy(request)
        if method == "PATCH" and request.name and APPLY in request.headers.get("Content-Type", ""):
            return await self._apply(request)
        if method == "PATCH" and request.name:
            return await self._merge(request)
        if method == "PUT" and request.name:
            return await self._replace(request)
        if method == "POST" and not request.name:
            return await self._create(request)
        if method == "DELETE" and request.name:
            return await self._delete(request)
        if method == "GET" and not request.name and request.params.get("watch") != "true":
            return self._list(request)
        if method == "GET" and request.params.get("watch") == "true":
            return await self._watch(request)
        if method == "GET" and request.name and not request.subresource:
            found = self._get(self._key(request))
            if found is None:
                plural = request.resource.plural
                return _status(404, "NotFound", f'{plural} "{request.name}" not found')
            return _json(found)
        response = await super()._handle(request)
        if response.content_type == "application/json":
            response.headers["Content-Type"] = "application/json"
        return response

    async def _discovery(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        response = await super()._handle(request)
        if response.content_type == "application/json":
            response.headers["Content-Type"] = "application/json"
        if request.url.path.rstrip("/") == "/api/v1" and isinstance(response, aiohttp.web.Response):
            # kmock names the core group version "/v1"; the API server (and kubectl) say "v1"
            body = json.loads(response.body)  # type: ignore[arg-type]
            body["groupVersion"] = "v1"
            return _json(body)
        return response

    async def _watch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A watch stream as the API server serves it: ``application/json``, one event per line,
        the current objects first as ``ADDED`` (with a ``resourceVersion``, as when watching on
        from a list: only those changed since, as ``MODIFIED``), then every change, filtered
        like :meth:`_list`."""
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            if labels and not _matches_labels(meta.get("labels") or {}, labels):
                return False
            return not (fields and not _matches_fields(obj, fields))

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)  # type: ignore[arg-type]
        bus = self._buses[request.resource]  # type: ignore[index]
        marker = await bus.mark()  # before listing: no change falls between the two
        # From a resourceVersion (as after a list) only later changes, as the API server
        # replays them; without one every current object as ADDED first.
        since = int(request.params.get("resourceVersion") or -1)
        for (resource, _, _), obj in list(self._objects.items()):
            if resource != request.resource or obj.deleted or not wanted(obj.raw):
                continue
            version = int(obj.raw.get("metadata", {}).get("resourceVersion", 0) or 0)
            if since < 0 or version > since:
                kind = "ADDED" if since < 0 else "MODIFIED"
                line = json.dumps({"type": kind, "object": obj.raw}) + "\n"
                await response.write(line.encode())
        try:
            with contextlib.suppress(ConnectionError):
                async for event in bus.stream(since=marker):
                    if wanted(event.get("object", {})):
                        await response.write((json.dumps(event) + "\n").encode())
        finally:
            await bus.unmark(marker)
        return response

    async def _apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        applied = json.loads(request.body) if request.body else {}
        old = self._get(key)
        if old is None:
            new = self._stamp_metadata(copy.deepcopy(applied), None, request.namespace)
            code = 201
        else:
            new = copy.deepcopy(applied)
            meta = new.setdefault("metadata", {})
            old_meta = old.get("metadata", {})
            for field in ("labels", "annotations"):
                merged = {**(old_meta.get(field) or {}), **(meta.get(field) or {})}
                if merged:
                    meta[field] = merged
            # Fields the applier does not set but other managers own stay: the HPA's replicas,
            # kubectl rollout pause's paused (the emulator knows only these two).
            for owned_elsewhere in ("replicas", "paused"):
                if owned_elsewhere in old.get("spec", {}) and owned_elsewhere not in new.get(
                    "spec", {}
                ):
                    new.setdefault("spec", {})[owned_elsewhere] = old["spec"][owned_elsewhere]
            if "status" in old:
                new["status"] = old["status"]
            new = self._stamp_metadata(new, old, request.namespace)
            code = 200
        if request.params.get("dryRun") != "All":
            await self._store(key, new, "ADDED" if code == 201 else "MODIFIED")
        return _json(new, status=code)

    async def _merge(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        old = self._get(key)
        if old is None:
            return _status(404, "NotFound", f'{key[0].plural} "{request.name}" not found')
        patch = json.loads(request.body) if request.body else {}
        merged = merge_patch_dict(old, patch)
        new = copy.deepcopy(dict(merged))
        if request.subresource == "status":
            new["metadata"]["resourceVersion"] = str(next(self.versions))
        else:
            new = self._stamp_metadata(new, old, request.namespace)
        await self._store(key, new, "MODIFIED")
        return _json(new)

    async def _replace(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        old = self._get(key)
        if old is None:
            return _status(404, "NotFound", f'{key[0].plural} "{request.name}" not found')
        new = json.loads(request.body)
        wanted = new.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[0].plural} "{request.name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )
        if "status" in old and "status" not in new:
            new["status"] = old["status"]
        new = self._stamp_metadata(new, old, request.namespace)
        await self._store(key, new, "MODIFIED")
        return _json(new)

    async def _create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        obj = json.loads(request.body)
        name = obj.get("metadata", {}).get("name")
        key = self._key(request, name)
        if self._get(key) is not None:
            return _status(409, "AlreadyExists", f'{key[0].plural} "{name}" already exists')
        new = self._stamp_metadata(obj, None, request.namespace)
        await self._store(key, new, "ADDED")
        return _json(new, status=201)

    async def _delete(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        old = self._get(key)
        if old is None:
            return _status(404, "NotFound", f'{key[0].plural} "{request.name}" not found')
        self._objects[key].delete()
        await self._buses[key[0]].put({"type": "DELETED", "object": old})
        return _json(old)

    def _list(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        items = []
        for (resource, namespace, _), obj in self._objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = obj.raw
            if labels and not _matches_labels(raw.get("metadata", {}).get("labels") or {}, labels):
                continue
            if fields and not _matches_fields(raw, fields):
                continue
            items.append(copy.deepcopy(raw))
        return _json(
            {
                "kind": "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._newest_version())},
                "items": items,
            }
        )

    def _newest_version(self) -> int:
        """The newest ``resourceVersion`` of any object (a list's version: a watch from it
        sees every later change)."""
        versions = [
            int(obj.raw.get("metadata", {}).get("resourceVersion", 0) or 0)
            for obj in self._objects.values()
            if not obj.deleted
        ]
        return max(versions, default=0)

    def objects_of(self, plural: str, namespace: str, group: str = "") -> list[dict[str, Any]]:
        """Live objects of one resource in a namespace (for the controller and assertions)."""
        found = []
        for (resource, ns, _), obj in self._objects.items():
            same = resource.plural == plural and resource.group == group and ns == namespace
            if same and not obj.deleted:
                found.append(copy.deepcopy(obj.raw))
        return found

    def _proxy(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        service_name = (request.name or "").split(":")[0]
        service = self._get((kmock.resource("", "v1", "services"), request.namespace, service_name))
        if service is None:
            return _status(404, "NotFound", f'services "{service_name}" not found')
        selector = service.get("spec", {}).get("selector") or {}
        ready = [
            pod
            for pod in self.objects_of("pods", request.namespace or "")
            if all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in pod.get("status", {}).get("conditions", [])
            )
        ]
        if not ready:
            return _status(
                503, "ServiceUnavailable", f'no endpoints available for service "{service_name}"'
            )
        code, body = self.health.get(
            (request.namespace or "", service_name), (200, '{"status":"ok"}')
        )
        return aiohttp.web.Response(text=body, status=code, content_type="application/json")


class RunningCluster:
    """A :class:`Cluster` served on a free loopback port from a background thread."""

    def __init__(self) -> None:
        self.cluster = Cluster()
        with warnings.catch_warnings():  # kmock reads its bundle with a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            self.cluster.resources.load_bundled()  # real kinds, verbs and scopes for discovery
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.cluster, kmock.Server(self.cluster) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        self.http.close()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the emulator's loop (safe access to its objects) and return its value."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (context ``emulator``) pointing at this server."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {
                                "cluster": "emulator",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "emulator",
                }
            )
        )
        return path

    # -- reading and writing through the API, as a controller would ----------------------------

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.http.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def list(self, path: str, **params: str) -> list[dict[str, Any]]:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()["items"]  # type: ignore[no-any-return]

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=obj)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        response = self.http.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def delete(self, path: str) -> None:
        self.http.delete(path)


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


class Controller:
    """Plays the Deployment controller on a :class:`RunningCluster`, one explicit step at a time.

    :meth:`roll` brings a Deployment's current generation to a given state the way the real
    controller reports it: the ReplicaSet of the current template (``pod-template-hash``,
    owner reference, revision annotation), its pods, and the Deployment's status.
    """

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.cluster.get(deployment_path(namespace, name))
        assert found is not None, f"no Deployment {namespace}/{name}"
        return found

    def set_status(self, namespace: str, name: str, **status: Any) -> None:
        """PATCH ``/status`` of a Deployment with the given fields."""
        self.cluster.patch(deployment_path(namespace, name) + "/status", {"status": status})

    def replica_set(self, namespace: str, deployment: dict[str, Any]) -> dict[str, Any]:
        """The ReplicaSet of the Deployment's current template, created if missing."""
        template = deployment["spec"]["template"]
        pod_hash = template_hash(template)
        name = f"{deployment['metadata']['name']}-{pod_hash}"
        path = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
        existing = self.cluster.get(f"{path}/{name}")
        if existing is not None:
            return existing
        others = self.cluster.list(path)
        revision = 1 + max(
            (
                int(
                    rs["metadata"]
                    .get("annotations", {})
                    .get("deployment.kubernetes.io/revision", 0)
                )
                for rs in others
            ),
            default=0,
        )
        labels = {**template["metadata"]["labels"], "pod-template-hash": pod_hash}
        rs_template = copy.deepcopy(template)
        rs_template["metadata"]["labels"] = labels
        return self.cluster.create(
            path,
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": deployment["metadata"]["name"],
                            "uid": deployment["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": deployment["spec"].get("replicas", 1),
                    "selector": {"matchLabels": labels},
                    "template": rs_template,
                },
            },
        )

    def pods(
        self, namespace: str, replica_set: dict[str, Any], count: int, mode: str
    ) -> list[dict[str, Any]]:
        """Make ``count`` pods of ``replica_set`` exist in ``mode``: ``ready``, ``crashloop``
        (CrashLoopBackOff, 3 restarts, last exit code 1, with a BackOff event),
        ``unavailable`` (running, not ready) or ``imagepull`` (ImagePullBackOff)."""
        labels = replica_set["metadata"]["labels"]
        container = replica_set["spec"]["template"]["spec"]["containers"][0]["name"]
        path = f"/api/v1/namespaces/{namespace}/pods"
        events = f"/api/v1/namespaces/{namespace}/events"
        made = []
        for index in range(count):
            name = f"{replica_set['metadata']['name']}-p{index}"
            ready = mode == "ready"
            state: dict[str, Any] = {"running": {"startedAt": now_stamp()}}
            status: dict[str, Any] = {
                "name": container,
                "ready": ready,
                "restartCount": 0,
                "state": state,
                "image": replica_set["spec"]["template"]["spec"]["containers"][0]["image"],
                "imageID": "",
            }
            if mode == "crashloop":
                status["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 40s restarting failed container={container}",
                    }
                }
                status["restartCount"] = 3
                status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
            elif mode == "imagepull":
                status["state"] = {
                    "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
                }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": replica_set["metadata"]["name"],
                            "uid": replica_set["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": replica_set["spec"]["template"]["spec"],
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                    "containerStatuses": [status],
                },
            }
            if mode == "crashloop" and self.cluster.get(f"{events}/{name}.backoff") is None:
                # the kubelet records BackOff as the restarts happen, before a status reports it
                self.cluster.create(
                    events,
                    {
                        "apiVersion": "v1",
                        "kind": "Event",
                        "metadata": {"name": f"{name}.backoff", "namespace": namespace},
                        "involvedObject": {"kind": "Pod", "name": name, "namespace": namespace},
                        "reason": "BackOff",
                        "message": f"Back-off restarting failed container {container}",
                        "count": 3,
                        "lastTimestamp": now_stamp(),
                        "type": "Warning",
                    },
                )
            if self.cluster.get(f"{path}/{name}") is not None:
                self.cluster.delete(f"{path}/{name}")
            made.append(self.cluster.create(path, pod))
        return made

    def remove_old_pods(self, namespace: str, deployment: dict[str, Any], keep_hash: str) -> None:
        selector = deployment["spec"]["selector"]["matchLabels"]
        for pod in self.cluster.list(f"/api/v1/namespaces/{namespace}/pods"):
            labels = pod["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in selector.items()) and (
                labels.get("pod-template-hash") != keep_hash
            ):
                self.cluster.delete(
                    f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"
                )

    def roll(self, namespace: str, name: str, mode: str = "ready") -> dict[str, Any]:
        """Bring the Deployment's current generation to ``mode`` (see :meth:`pods`) and report
        it in the status as the controller does; returns the new ReplicaSet."""
        deployment = self.deployment(namespace, name)
        desired = deployment["spec"].get("replicas", 1)
        rs = self.replica_set(namespace, deployment)
        pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
        generation = deployment["metadata"]["generation"]
        if mode == "ready":
            self.pods(namespace, rs, desired, "ready")
            self.remove_old_pods(namespace, deployment, pod_hash)
            self.set_status(
                namespace,
                name,
                observedGeneration=generation,
                replicas=desired,
                updatedReplicas=desired,
                readyReplicas=desired,
                availableReplicas=desired,
                unavailableReplicas=0,
                conditions=[
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            )
        else:
            old = int(deployment.get("status", {}).get("availableReplicas", 0) or 0)
            self.pods(namespace, rs, 1, mode)
            self.set_status(
                namespace,
                name,
                observedGeneration=generation,
                replicas=old + 1,
                updatedReplicas=1,
                readyReplicas=old,
                availableReplicas=old,
                unavailableReplicas=1,
                conditions=[
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
                ],
            )
        return rs

    def deadline_exceeded(self, namespace: str, name: str) -> None:
        """Set the Progressing condition to ``ProgressDeadlineExceeded``."""
        status = self.deployment(namespace, name).get("status", {})
        conditions = [c for c in status.get("conditions", []) if c.get("type") != "Progressing"]
        conditions.append(
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}" has timed out progressing.',
            }
        )
        self.set_status(namespace, name, conditions=conditions)


@contextmanager
def running_cluster() -> Iterator[RunningCluster]:
    cluster = RunningCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


class AutoController:
    """Rolls out every new Deployment generation on its own, like the real controller, in the
    mode set in :attr:`modes` for the container image or else for the Deployment name (default
    ``ready``). Like the real controller it watches Deployments (from a background thread) and
    acts on what the objects say, so a reconnect that replays them loses nothing."""

    def __init__(self, cluster: RunningCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.controller = Controller(cluster)
        self.modes: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="auto-controller", daemon=True)

    def __enter__(self) -> AutoController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        while not self._stop.is_set():
            try:
                # a short read timeout: the stream is re-opened (replaying every Deployment as
                # ADDED) so that the stop flag is seen within a quarter second
                with self.cluster.http.stream(
                    "GET", path, params={"watch": "true"}, timeout=httpx.Timeout(10, read=0.25)
                ) as stream:
                    for line in stream.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.strip():
                            self._react(json.loads(line).get("object") or {})
            except httpx.HTTPError:
                continue

    def _react(self, deployment: dict[str, Any]) -> None:
        meta, status = deployment.get("metadata", {}), deployment.get("status") or {}
        spec = deployment.get("spec", {})
        if spec.get("paused") or not meta.get("name"):
            return
        if meta.get("generation", 1) > status.get("observedGeneration", 0):
            image = spec["template"]["spec"]["containers"][0]["image"]
            mode = self.modes.get(image, self.modes.get(meta["name"], "ready"))
            self.controller.roll(self.namespace, meta["name"], mode)

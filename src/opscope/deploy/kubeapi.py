"""The Kubernetes API as deploys use it: server-side apply, reads, locks' and releases' objects.

A thin asynchronous facade over lightkube's :class:`~lightkube.AsyncClient` that speaks plain
dicts (the JSON the API server returns), so that rollout judgement
(:mod:`opscope.deploy.judgement`) works on exactly what ``kubectl get -o json`` shows. Every
write uses the field manager ``opscope``; applies are server-side applies with ``force``
(opscope owns the fields it writes, as ``kubectl apply --server-side --force-conflicts``).

Errors become :class:`~opscope.errors.KubeError` (with the HTTP status and the API server's
message), :class:`~opscope.errors.KubeUnavailable` when the API server cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.codecs import from_dict
from lightkube.config.client_adapter import AsyncClient as ConfiguredHttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.core.exceptions import LoadResourceError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource, get_generic_resource
from lightkube.types import PatchType

from opscope.config.deploy import KubernetesTarget
from opscope.errors import ConfigError, KubeError, KubeUnavailable

FIELD_MANAGER = "opscope"
#: Custom resources opscope renders, registered with lightkube as generic resources.
_CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
}


def resource_class(api_version: str, kind: str) -> Any:
    """The lightkube resource class of ``api_version``/``kind`` (built-in or one of opscope's
    custom resources). Raises :class:`KubeError` for a kind opscope does not know."""
    if (api_version, kind) in _CUSTOM:
        found = get_generic_resource(api_version, kind)  # type: ignore[no-untyped-call]
        if found is not None:
            return found
        group, version = api_version.split("/")
        return create_namespaced_resource(group, version, kind, _CUSTOM[api_version, kind])
    try:
        return resource_registry.load(api_version, kind)
    except LoadResourceError:
        raise KubeError(f"unknown resource kind {api_version} {kind}", status=None) from None


def kube_config(target: KubernetesTarget, base: Path) -> KubeConfig:
    """The kubeconfig of ``target``: its ``kubeconfig`` (relative to ``base``), else
    ``$KUBECONFIG`` (first file), else ``~/.kube/config``; context ``target.context`` or the
    current one. Raises :class:`ConfigError` naming the file and context."""
    if target.kubeconfig is not None:
        path = target.kubeconfig if target.kubeconfig.is_absolute() else base / target.kubeconfig
    elif os.environ.get("KUBECONFIG"):
        path = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    else:
        path = Path("~/.kube/config").expanduser()
    try:
        config = KubeConfig.from_file(path)
        config.get(target.context)  # validates the context now, not at the first request
    except LightkubeConfigError as exc:
        raise ConfigError(f"kubeconfig {path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"kubeconfig {path}: cannot be used ({exc})") from None
    return config


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind', '?')} {meta.get('namespace', '')}/{meta.get('name', '?')}"


class KubeAPI:
    """One API server, as configured by a kubeconfig context.

    ``server`` is the API server's URL. Use as an async context manager, or call
    :meth:`aclose`.
    """

    def __init__(self, config: KubeConfig, *, context: str | None = None, timeout: float = 10.0):
        single = config.get(context)
        if single is None:
            raise ConfigError(f'kubeconfig has no context "{context}" and no current context')
        self.server: str = single.cluster.server
        self._client = AsyncClient(
            config=single, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout)
        )
        self._http = ConfiguredHttpClient(single, ConnectionParams(timeout=httpx2.Timeout(timeout)))

    async def __aenter__(self) -> KubeAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.close()
        await self._http.aclose()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Re-raise lightkube's and httpx's errors as :class:`KubeError`."""
        try:
            yield
        except ApiError as exc:
            message = exc.status.message or exc.status.reason or str(exc)
            raise KubeError(
                f"{what}: {message}", status=exc.status.code, reason=exc.status.reason
            ) from exc
        except httpx2.HTTPStatusError as exc:  # an error without a Status body (a proxy's)
            code = exc.response.status_code
            raise KubeError(
                f"{what}: HTTP {code}: {exc.response.text.strip()[:200]}", status=code
            ) from exc
        except httpx2.HTTPError as exc:
            raise KubeUnavailable(
                f"{what}: cannot reach the Kubernetes API at {self.server}: {exc}"
            ) from exc
        except msgspec.MsgspecError as exc:
            raise KubeError(f"{what}: unexpected response: {exc}", status=None) from exc

    async def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of ``obj`` (``force``: opscope takes over fields it writes);
        ``dry_run`` asks the API server what the result would be without storing it. Returns
        the object as stored (or as it would be)."""
        meta = obj["metadata"]
        res = resource_class(obj["apiVersion"], obj["kind"])
        with self._translated(f"apply {_name(obj)}"):
            result = await self._client.patch(
                res,
                meta["name"],
                obj,
                namespace=meta.get("namespace"),
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=True,
                dry_run=dry_run,
            )
        return _as_dict(result)

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None
    ) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        res = resource_class(api_version, kind)
        try:
            with self._translated(f"get {kind} {namespace}/{name}"):
                return _as_dict(await self._client.get(res, name, namespace=namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        *,
        labels: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of one kind in ``namespace`` matching label and field equalities."""
        res = resource_class(api_version, kind)
        with self._translated(f"list {kind} in {namespace}"):
            return [
                _as_dict(item)
                async for item in self._client.list(
                    res,
                    namespace=namespace,
                    labels=dict(labels) if labels else None,
                    fields=dict(fields) if fields else None,
                )
            ]

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``; :class:`KubeError` with status 409 when it exists."""
        with self._translated(f"create {_name(obj)}"):
            return _as_dict(await self._client.create(from_dict(obj)))

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace ``obj`` (PUT); with ``metadata.resourceVersion`` set, a concurrent change makes
        it fail with status 409 (optimistic concurrency)."""
        with self._translated(f"replace {_name(obj)}"):
            return _as_dict(await self._client.replace(from_dict(obj)))

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        """Delete an object; ``False`` when it did not exist."""
        res = resource_class(api_version, kind)
        try:
            with self._translated(f"delete {kind} {namespace}/{name}"):
                await self._client.delete(res, name, namespace=namespace)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch_changes(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        changed: asyncio.Event,
        *,
        labels: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        """Set ``changed`` on every watch event of the matching objects, until cancelled.

        The events themselves are not used: a waiter re-reads what it judges, so a missed or
        coalesced event costs at most one poll interval. Returns quietly when the watch
        cannot be held (no ``watch`` permission, a proxy that cuts streams, a dropped
        connection): callers keep polling, as ``kubectl rollout status`` falls back to
        re-listing.
        """
        res = resource_class(api_version, kind)
        try:
            async for _event in self._client.watch(
                res,
                namespace=namespace,
                labels=dict(labels) if labels else None,
                fields=dict(fields) if fields else None,
            ):
                changed.set()
        except (ApiError, httpx2.HTTPError, msgspec.MsgspecError, ValueError, KeyError):
            return

    async def proxy_get(
        self, namespace: str, service: str, port: int | str, path: str
    ) -> tuple[int, str]:
        """``GET path`` on a Service through the API server's service proxy
        (``/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH``). Returns the status code and
        up to 500 characters of the body; raises :class:`KubeUnavailable` on network errors."""
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}"
        try:
            response = await self._http.get(url)
        except httpx2.HTTPError as exc:
            raise KubeUnavailable(
                f"health check through {self.server}{url}: {type(exc).__name__}: {exc}"
            ) from exc
        return response.status_code, response.text[:500]


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

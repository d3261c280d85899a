"""Offline validation of manifests against the official Kubernetes schemas.

The schemas are those ``kubernetes-validate`` ships (generated from the Kubernetes OpenAPI
definitions, one set per minor version). Validation is *strict*: a field the schema does not
define is an error, as ``kubectl apply --validate=strict`` makes it on a real API server, so a
typo such as ``spec.replicaz`` is caught before anything reaches a cluster.

Custom resources (prometheus-operator's ServiceMonitor and PrometheusRule) have no schema here:
they are skipped and reported as notes, never as errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import kubernetes_validate
from kubernetes_validate.utils import all_versions

from opscope.errors import ConfigError

#: API groups whose resources are custom (CRDs): not in the official schemas.
CUSTOM_GROUPS = frozenset({"monitoring.coreos.com"})


@dataclass(frozen=True)
class ManifestProblem:
    """One problem (``severity="error"``) or remark (``severity="note"``) about one object.

    ``path`` is the field path inside the object in dotted form
    (``spec.template.spec.containers[0].ports[0].containerPort``), ``""`` for the whole object.
    """

    kind: str
    namespace: str | None
    name: str
    path: str
    message: str
    severity: Literal["error", "note"] = "error"

    def __str__(self) -> str:
        where = (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else (f"{self.kind} {self.name}")
        )
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.removeprefix("v").split(".")[:2]
    return int(major), int(minor)


def supported_versions() -> list[str]:
    """The Kubernetes minor versions whose schemas are installed, oldest first (``1.25``, …)."""
    minors = sorted({_minor(v) for v in all_versions()})
    return [f"{major}.{minor}" for major, minor in minors]


def schema_version(version: str) -> str:
    """The installed schema set for Kubernetes ``version`` (``1.30``, ``v1.30.2`` → ``1.30``).

    Raises :class:`ConfigError` naming the supported range when there is none: an older schema
    would accept fields a newer server rejects and the other way round.
    """
    supported = supported_versions()
    try:
        wanted = _minor(version)
    except ValueError:
        raise ConfigError(
            f'"{version}" is not a Kubernetes version (expected MAJOR.MINOR, e.g. 1.30)'
        ) from None
    text = f"{wanted[0]}.{wanted[1]}"
    if text not in supported:
        raise ConfigError(
            f"Kubernetes {text} is not supported: installed schemas cover {supported[0]} to "
            f"{supported[-1]} (kubernetes-validate {kubernetes_validate.__version__})"
        )
    return text


def _builtin(group: str) -> bool:
    """Whether an API group is Kubernetes' own: the core group (``""``), a group without a dot
    (``apps``, ``batch``, ``policy``) or one under ``k8s.io``. A CustomResourceDefinition's group
    always has a dot (it must be a DNS subdomain with at least two labels)."""
    return "." not in group or group == "k8s.io" or group.endswith(".k8s.io")


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problems(
    error: Any, kind: str, namespace: str | None, name: str, version: str
) -> list[ManifestProblem]:
    path = list(error.path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        # One problem per unknown field, at the field's own path.
        known = error.schema.get("properties", {})
        unknown = [key for key in error.instance if key not in known]
        if unknown:
            return [
                ManifestProblem(
                    kind,
                    namespace,
                    name,
                    _path([*path, key]),
                    f'unknown field "{key}" (not in the Kubernetes {version} schema)',
                )
                for key in unknown
            ]
    return [ManifestProblem(kind, namespace, name, _path(path), str(error.message))]


def validate_manifests(
    manifests: Iterable[Mapping[str, Any]], version: str
) -> list[ManifestProblem]:
    """Problems of ``manifests`` against the Kubernetes ``version`` schemas (strict: unknown
    fields are errors), then notes for the custom resources that were skipped.

    Each object is reported at its first schema violation (the validator stops there), so fix
    and validate again until the list has no errors. Raises :class:`ConfigError` when
    ``version`` is outside the installed schemas.
    """
    schemas = schema_version(version)
    problems: list[ManifestProblem] = []
    notes: list[ManifestProblem] = []
    for manifest in manifests:
        api_version = str(manifest.get("apiVersion", ""))
        kind = str(manifest.get("kind", ""))
        metadata = manifest.get("metadata") or {}
        namespace = metadata.get("namespace")
        name = str(metadata.get("name", "?"))
        if not api_version or not kind:
            problems.append(
                ManifestProblem(
                    kind or "?", namespace, name, "", "apiVersion and kind are required"
                )
            )
            continue
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        skipped = ManifestProblem(
            kind,
            namespace,
            name,
            "",
            f"custom resource {api_version}: not validated (no schema offline; the cluster "
            "checks it against its CustomResourceDefinition)",
            severity="note",
        )
        if group in CUSTOM_GROUPS:
            notes.append(skipped)
            continue
        try:
            kubernetes_validate.validate(dict(manifest), schemas, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems += _problems(exc, kind, namespace, name, schemas)
        except kubernetes_validate.SchemaNotFoundError:
            if _builtin(group):
                problems.append(
                    ManifestProblem(
                        kind,
                        namespace,
                        name,
                        "",
                        f"Kubernetes {schemas} has no kind {kind} in {api_version}",
                    )
                )
            else:
                notes.append(skipped)
        except kubernetes_validate.InvalidSchemaError as exc:
            problems.append(ManifestProblem(kind, namespace, name, "", str(exc.message)))
    return problems + notes

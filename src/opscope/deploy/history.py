"""Release history: one revision per deploy or rollback of a release (service + environment).

A revision records what was deployed (the rendered manifests, or the local process spec), the
image and version, a digest of the configuration, its status and timestamps. Statuses, as in
Helm's release history:

* ``pending`` — being deployed (or interrupted before the outcome was known);
* ``deployed`` — the current revision, rolled out and healthy;
* ``superseded`` — was deployed, replaced by a later deployed revision;
* ``failed`` — its deploy failed and it was left applied (no rollback, or the rollback failed);
* ``rolled-back`` — its deploy failed and the previous revision was restored.

On Kubernetes each revision is a Secret of type ``opscope.dev/release.v1`` in the release's
namespace, holding the revision as gzip-compressed JSON (the way Helm 3 stores releases,
``helm.sh/release.v1``); locally, revisions live in opscope's store. Only the last
``history_max`` revisions are kept, never pruning the last deployed one.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

Status = Literal["pending", "deployed", "superseded", "failed", "rolled-back"]
STATUSES: tuple[Status, ...] = ("pending", "deployed", "superseded", "failed", "rolled-back")
SECRET_TYPE = "opscope.dev/release.v1"
#: Labels of release Secrets (``owner`` and ``name`` as Helm labels its own).
OWNER_LABEL, NAME_LABEL, STATUS_LABEL, VERSION_LABEL = "owner", "name", "status", "version"
ENVIRONMENT_LABEL = "opscope.dev/environment"


@dataclass(frozen=True)
class Revision:
    """One revision of a release.

    ``payload`` is what was deployed: ``{"manifests": [...]}`` on Kubernetes, ``{"process":
    {...}}`` locally. ``created_at``/``updated_at`` are Unix seconds. ``description`` says what
    happened in words (``Upgrade complete``, ``Rollback to 3``, the failure).
    """

    release: str
    environment: str
    namespace: str
    revision: int
    status: Status
    version: str
    image: str | None
    config_digest: str
    payload: dict[str, Any]
    description: str
    created_at: float
    updated_at: float
    rollback_of: int | None = None
    deployed_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def with_status(self, status: Status, description: str, *, at: float) -> Revision:
        """This revision with a new status and description."""
        return replace(self, status=status, description=description, updated_at=at)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Revision:
        """Inverse of :meth:`to_json`; unknown keys (from newer versions) are ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def secret_name(release: str, revision: int) -> str:
    """Name of the Secret holding one revision: ``opscope.release.v1.<release>.v<revision>``."""
    return f"opscope.release.v1.{release}.v{revision}"


def to_secret(revision: Revision) -> dict[str, Any]:
    """The Secret (``type: opscope.dev/release.v1``) storing ``revision``: ``data.release`` is
    base64(gzip(JSON)), labels make revisions listable per release and status."""
    packed = gzip.compress(json.dumps(revision.to_json(), sort_keys=True).encode(), mtime=0)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(revision.release, revision.revision),
            "namespace": revision.namespace,
            "labels": {
                OWNER_LABEL: "opscope",
                NAME_LABEL: revision.release,
                STATUS_LABEL: revision.status,
                VERSION_LABEL: str(revision.revision),
                ENVIRONMENT_LABEL: revision.environment,
            },
        },
        "data": {"release": base64.b64encode(packed).decode()},
    }


def from_secret(secret: dict[str, Any]) -> Revision:
    """The revision stored in a release Secret. Raises :class:`ValueError` if it is not one."""
    if secret.get("type") != SECRET_TYPE:
        raise ValueError(f"not an opscope release Secret (type {secret.get('type')!r})")
    data = (secret.get("data") or {}).get("release")
    if not isinstance(data, str):
        raise ValueError("release Secret without data.release")
    return Revision.from_json(json.loads(gzip.decompress(base64.b64decode(data))))


class ReleaseStore(Protocol):
    """Where a backend keeps revisions."""

    async def revisions(self, release: str) -> list[Revision]:
        """Every stored revision of ``release``, oldest first."""

    async def save(self, revision: Revision) -> None:
        """Create or update one revision."""

    async def delete(self, release: str, revision: int) -> None:
        """Forget one revision."""


def current(revisions: list[Revision]) -> Revision | None:
    """The revision to roll back to: the newest ``deployed`` one, else the newest that was
    deployed once (``superseded``)."""
    for status in ("deployed", "superseded"):
        found = [r for r in revisions if r.status == status]
        if found:
            return found[-1]
    return None


def to_prune(revisions: list[Revision], keep: int) -> list[Revision]:
    """The revisions beyond the newest ``keep`` that may be deleted: never the current one
    (:func:`current`) nor a ``pending`` one."""
    protected = current(revisions)
    ordered = sorted(revisions, key=lambda r: r.revision)
    excess = len(ordered) - keep
    found = []
    for revision in ordered:
        if excess <= 0:
            break
        if revision is protected or revision.status == "pending":
            continue
        found.append(revision)
        excess -= 1
    return found

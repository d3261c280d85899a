"""Revisions: their Secret encoding (Helm 3's scheme) and which ones history keeps."""

from __future__ import annotations

import base64
import gzip
import json

from opscope.deploy.history import Revision, current, from_secret, to_prune, to_secret


def revision(number: int, status: str, **fields: object) -> Revision:
    values: dict[str, object] = {
        "release": "web",
        "environment": "prod",
        "namespace": "shop",
        "revision": number,
        "status": status,
        "version": f"1.{number}.0",
        "image": f"example/web:1.{number}.0",
        "config_digest": "abc",
        "payload": {"manifests": [{"kind": "Deployment"}]},
        "description": "Upgrade complete",
        "created_at": 1000.0 + number,
        "updated_at": 1000.0 + number,
    }
    values.update(fields)
    return Revision(**values)  # type: ignore[arg-type]


def test_a_revision_secret_is_gzip_json_in_base64_with_listing_labels() -> None:
    secret = to_secret(revision(3, "deployed"))
    assert secret["type"] == "opscope.dev/release.v1"
    assert secret["metadata"]["name"] == "opscope.release.v1.web.v3"
    assert secret["metadata"]["labels"] == {
        "owner": "opscope",
        "name": "web",
        "status": "deployed",
        "version": "3",
        "opscope.dev/environment": "prod",
    }
    decoded = json.loads(gzip.decompress(base64.b64decode(secret["data"]["release"])))
    assert decoded["payload"] == {"manifests": [{"kind": "Deployment"}]}
    assert from_secret(secret) == revision(3, "deployed")


def test_current_is_the_newest_deployed_else_the_newest_once_deployed() -> None:
    history = [revision(1, "superseded"), revision(2, "deployed"), revision(3, "failed")]
    assert current(history) == history[1]
    assert current(
        [revision(1, "superseded"), revision(2, "superseded"), revision(3, "pending")]
    ) == revision(2, "superseded")
    assert current([revision(1, "failed")]) is None


def test_pruning_keeps_the_newest_and_never_the_current_or_a_pending_one() -> None:
    history = [
        revision(1, "deployed"),  # an old revision still current (later ones all failed)
        revision(2, "rolled-back"),
        revision(3, "rolled-back"),
        revision(4, "failed"),
        revision(5, "pending"),
    ]
    assert [r.revision for r in to_prune(history, keep=2)] == [2, 3, 4]
    assert to_prune(history, keep=10) == []

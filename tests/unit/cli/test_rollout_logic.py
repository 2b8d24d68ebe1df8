"""Rollout status messages and choosing the revision to roll back to."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.cli._rollout import (
    RolloutError,
    new_replicaset,
    pick_rollback,
    revision,
    rollout_status,
    template_without_hash,
)


def _dep(generation: int = 2, observed: int = 2, want: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "uid": "d1", "generation": generation},
        "spec": {"replicas": want, "template": _template("v2")},
        "status": {"observedGeneration": observed, **status},
    }


def _template(version: str, hash_: str | None = None) -> dict[str, Any]:
    labels = {"app": "web", "version": version}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": f"web:{version}"}]}}  # fmt: skip


def _rs(name: str, rev: int | None, version: str, owner: str = "d1") -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(rev)} if rev else {}
    return {
        "metadata": {"name": name, "annotations": annotations,
                     "ownerReferences": [{"uid": owner, "kind": "Deployment", "name": "web"}]},
        "spec": {"replicas": 1, "template": _template(version, name[-4:])},
    }  # fmt: skip


def test_status_waits_for_the_new_generation_to_be_observed() -> None:
    assert rollout_status(_dep(generation=3, observed=2)) == (
        "Waiting for deployment spec update to be observed...",
        False,
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"updatedReplicas": 1, "replicas": 3},
         'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...'),
        ({"updatedReplicas": 3, "replicas": 4, "availableReplicas": 3},
         'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...'),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 1},
         'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...'),
    ],
)  # fmt: skip
def test_status_progress_lines(status: dict[str, int], message: str) -> None:
    assert rollout_status(_dep(**status)) == (message, False)


def test_status_done() -> None:
    done = _dep(updatedReplicas=3, replicas=3, availableReplicas=3)
    assert rollout_status(done) == ('deployment "web" successfully rolled out', True)


def test_status_deadline_exceeded_is_an_error() -> None:
    dep = _dep(conditions=[{"type": "Progressing", "status": "False",
                            "reason": "ProgressDeadlineExceeded"}])  # fmt: skip
    with pytest.raises(RolloutError, match="exceeded its progress deadline"):
        rollout_status(dep)


def test_pick_previous_or_given_revision() -> None:
    owned = [_rs("web-aaaa", 1, "v1"), _rs("web-cccc", 3, "v3"), _rs("web-bbbb", 2, "v2")]
    assert pick_rollback(owned, 0)["metadata"]["name"] == "web-bbbb"
    assert pick_rollback(owned, 1)["metadata"]["name"] == "web-aaaa"
    with pytest.raises(RolloutError, match="revision 9"):
        pick_rollback(owned, 9)
    with pytest.raises(RolloutError, match="no rollout history"):
        pick_rollback(owned[:1], 0)


def test_template_without_hash_and_new_replicaset() -> None:
    rs = _rs("web-bbbb", 2, "v2")
    assert (
        "pod-template-hash"
        not in template_without_hash(rs["spec"]["template"])["metadata"]["labels"]
    )
    assert "pod-template-hash" in rs["spec"]["template"]["metadata"]["labels"]
    owned = [_rs("web-aaaa", 1, "v1"), rs]
    assert new_replicaset(_dep(), owned) is rs
    assert revision(rs) == 2 and revision(_rs("x", None, "v1")) == 0

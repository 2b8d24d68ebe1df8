"""Server-side defaults applied at admission, as Kubernetes' defaulting does."""

from __future__ import annotations

from typing import Literal

from shoal.api._apps import Deployment, RollingUpdateDeployment
from shoal.api._core import Pod, PodSpec, Service
from shoal.api._meta import Resource

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


def default_pull_policy(image: str) -> PullPolicy:
    """Kubernetes' default imagePullPolicy: Always for an untagged or ``:latest`` image (it
    may move), IfNotPresent for any other tag or a digest (it names fixed content).

    Only the last path component can carry the tag: in ``127.0.0.1:5000/app`` the colon
    belongs to the registry's port, so that image is untagged.
    """
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    _, sep, tag = last.partition(":")
    return "Always" if not sep or tag == "latest" else "IfNotPresent"


def _pod_spec(spec: PodSpec) -> None:
    for c in spec.containers:
        if c.image and c.image_pull_policy is None:
            c.image_pull_policy = default_pull_policy(c.image)


def apply_defaults(obj: Resource) -> None:
    """Fill in the fields a user may omit, in place."""
    if isinstance(obj, Pod):
        _pod_spec(obj.spec)
    elif isinstance(obj, Deployment):
        _pod_spec(obj.spec.template.spec)
        if obj.spec.strategy.type == "RollingUpdate" and obj.spec.strategy.rolling_update is None:
            obj.spec.strategy.rolling_update = RollingUpdateDeployment()
    elif isinstance(obj, Service):
        for p in obj.spec.ports:
            if p.target_port is None:
                p.target_port = p.port

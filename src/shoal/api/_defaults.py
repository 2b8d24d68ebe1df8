"""Server-side defaults applied at admission, as Kubernetes' defaulting does."""

from __future__ import annotations

from shoal.api._apps import Deployment, RollingUpdateDeployment
from shoal.api._core import Pod, PodSpec, Service
from shoal.api._meta import Resource


def _pod_spec(spec: PodSpec) -> None:
    for c in spec.containers:
        if c.image and c.image_pull_policy is None:
            tag = c.image.rsplit("/", 1)[-1]
            latest = ":" not in tag or tag.endswith(":latest")
            c.image_pull_policy = "Always" if latest and "@" not in tag else "IfNotPresent"


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

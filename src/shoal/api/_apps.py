"""apps/v1 kinds: Deployment and ReplicaSet; autoscaling/v1 Scale."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.api._core import PodTemplateSpec
from shoal.api._meta import Condition, IntOrString, LabelSelector, Model, Resource


class RollingUpdateDeployment(Model):
    max_surge: IntOrString = "25%"
    max_unavailable: IntOrString = "25%"


class DeploymentStrategy(Model):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(Model):
    replicas: int = 1
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    min_ready_seconds: int = 0
    revision_history_limit: int = 10
    paused: bool = False
    progress_deadline_seconds: int = 600


class DeploymentStatus(Model):
    observed_generation: int | None = None
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    collision_count: int | None = None


class Deployment(Resource):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


class ReplicaSetSpec(Model):
    replicas: int = 1
    selector: LabelSelector
    template: PodTemplateSpec
    min_ready_seconds: int = 0


class ReplicaSetStatus(Model):
    replicas: int = 0
    fully_labeled_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class ReplicaSet(Resource):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    spec: ReplicaSetSpec
    status: ReplicaSetStatus = Field(default_factory=ReplicaSetStatus)


class ScaleSpec(Model):
    replicas: int = 0


class ScaleStatus(Model):
    replicas: int = 0
    selector: str = ""


class Scale(Resource):
    api_version: Literal["autoscaling/v1"] = "autoscaling/v1"
    kind: Literal["Scale"] = "Scale"
    spec: ScaleSpec = Field(default_factory=ScaleSpec)
    status: ScaleStatus = Field(default_factory=ScaleStatus)

"""Core kinds (apiVersion v1): Namespace, Node, Pod, Service, Endpoints, Event, Binding."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.api._meta import (
    Condition,
    IntOrString,
    Model,
    ObjectMeta,
    ObjectReference,
    Quantity,
    Resource,
)
from shoal.api._networking import NodeLink

# --- Pods -------------------------------------------------------------------------------------


class EnvVar(Model):
    name: str
    value: str = ""


class ContainerPort(Model):
    container_port: int
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    host_port: int | None = None
    host_ip: str | None = Field(None, alias="hostIP")


class ResourceRequirements(Model):
    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class HTTPHeader(Model):
    name: str
    value: str


class HTTPGetAction(Model):
    path: str = "/"
    port: IntOrString
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] = Field(default_factory=list)


class TCPSocketAction(Model):
    port: IntOrString
    host: str | None = None


class ExecAction(Model):
    command: list[str] = Field(default_factory=list)


class Probe(Model):
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


class VolumeMount(Model):
    """Where a pod volume appears in one container."""

    name: str
    """Name of a volume in ``spec.volumes``."""
    mount_path: str
    """Absolute path inside the container."""
    read_only: bool = False
    sub_path: str | None = None
    """A relative path inside the volume to mount instead of its root (created if absent)."""


class SecurityContext(Model):
    """Container-level security settings; each set field overrides the pod's."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    """Refuse to start (CreateContainerConfigError) if the container would run as uid 0."""
    read_only_root_filesystem: bool | None = None
    privileged: bool | None = None
    allow_privilege_escalation: bool | None = None


class Container(Model):
    name: str
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    working_dir: str | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    security_context: SecurityContext | None = None


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EmptyDirVolumeSource(Model):
    """A scratch directory that lives as long as the pod on its node."""

    medium: Literal["", "Memory"] = ""
    """Empty: the node's disk; "Memory" asks for a tmpfs (a plain directory on drivers that
    cannot mount one). Kept as a value even when empty so ``emptyDir: {}`` survives the
    wire form, which drops empty maps."""
    size_limit: Quantity | None = None


HostPathType = Literal["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File"]


class HostPathVolumeSource(Model):
    """A file or directory of the node, shared with the pod."""

    path: str
    type: HostPathType = ""
    """Empty: no check; *OrCreate creates what is missing; Directory/File require it."""


class Volume(Model):
    """A named volume of a pod: exactly one source (emptyDir or hostPath)."""

    name: str
    empty_dir: EmptyDirVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None


class PodSecurityContext(Model):
    """Pod-level security settings, the defaults for every container."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None


class PodSpec(Model):
    containers: list[Container]
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    node_name: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    termination_grace_period_seconds: int = 30
    tolerations: list[Toleration] = Field(default_factory=list)
    hostname: str | None = None
    volumes: list[Volume] = Field(default_factory=list)
    security_context: PodSecurityContext | None = None
    host_network: bool | None = None
    """True: the pod shares the node's network namespace (omitted when false)."""
    networks: list[str] = Field(default_factory=list)
    """Names of the Networks the pod joins (shoal's extension; none: ``default``)."""


class ContainerStateWaiting(Model):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(Model):
    started_at: str | None = None


class ContainerStateTerminated(Model):
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str | None = Field(None, alias="containerID")


class ContainerState(Model):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Model):
    name: str
    ready: bool = False
    started: bool | None = None
    restart_count: int = 0
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: ContainerState = Field(default_factory=ContainerState)
    image: str = ""
    container_id: str | None = Field(None, alias="containerID")
    ports: list[ContainerPort] = Field(default_factory=list)
    """shoal extension: the ports the container actually listens on (the process driver maps
    each containerPort to a free host port and reports it here as hostPort)."""


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


class PodIP(Model):
    ip: str


class PodStatus(Model):
    phase: PodPhase = "Pending"
    conditions: list[Condition] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(default_factory=list)
    pod_ip: str | None = Field(None, alias="podIP")
    pod_ips: list[PodIP] = Field(default_factory=list, alias="podIPs")
    host_ip: str | None = Field(None, alias="hostIP")
    start_time: str | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None


class Pod(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)


class PodTemplateSpec(Model):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class Binding(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Binding"] = "Binding"
    target: ObjectReference


# --- Nodes ------------------------------------------------------------------------------------


class Taint(Model):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: str | None = None


class NodeSpec(Model):
    unschedulable: bool = False
    taints: list[Taint] = Field(default_factory=list)
    pod_cidr: str | None = Field(None, alias="podCIDR")
    provider_id: str | None = Field(None, alias="providerID")


class NodeAddress(Model):
    type: str
    address: str


class NodeSystemInfo(Model):
    machine_id: str = Field("", alias="machineID")
    kernel_version: str = ""
    os_image: str = ""
    operating_system: str = ""
    architecture: str = ""
    container_runtime_version: str = ""
    kubelet_version: str = ""
    kube_proxy_version: str = ""
    boot_id: str = Field("", alias="bootID")
    system_uuid: str = Field("", alias="systemUUID")


class DaemonEndpoint(Model):
    port: int = Field(0, alias="Port")


class NodeDaemonEndpoints(Model):
    kubelet_endpoint: DaemonEndpoint = Field(default_factory=DaemonEndpoint)


class NodeStatus(Model):
    capacity: dict[str, Quantity] = Field(default_factory=dict)
    allocatable: dict[str, Quantity] = Field(default_factory=dict)
    conditions: list[Condition] = Field(default_factory=list)
    addresses: list[NodeAddress] = Field(default_factory=list)
    node_info: NodeSystemInfo = Field(default_factory=NodeSystemInfo)
    daemon_endpoints: NodeDaemonEndpoints = Field(default_factory=NodeDaemonEndpoints)
    links: list[NodeLink] = Field(default_factory=list)
    """This node's links to its neighbours, for routing between nodes (shoal's extension)."""


class Node(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


# --- Services and endpoints -------------------------------------------------------------------


class ServicePort(Model):
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int
    target_port: IntOrString | None = None
    node_port: int | None = None


class ClientIPConfig(Model):
    timeout_seconds: int = 10800


class SessionAffinityConfig(Model):
    client_ip: ClientIPConfig | None = Field(None, alias="clientIP")


class ServiceSpec(Model):
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    cluster_ip: str | None = Field(None, alias="clusterIP")
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_config: SessionAffinityConfig | None = None


class ServiceStatus(Model):
    load_balancer: dict[str, object] = Field(default_factory=dict)


class Service(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: ServiceStatus = Field(default_factory=ServiceStatus)


class EndpointAddress(Model):
    ip: str
    hostname: str | None = None
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointPort(Model):
    name: str | None = None
    port: int
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class EndpointSubset(Model):
    addresses: list[EndpointAddress] = Field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


class Endpoints(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Endpoints"] = "Endpoints"
    subsets: list[EndpointSubset] = Field(default_factory=list)


# --- Namespaces and events --------------------------------------------------------------------


class NamespaceSpec(Model):
    finalizers: list[str] = Field(default_factory=list)


class NamespaceStatus(Model):
    phase: Literal["Active", "Terminating"] = "Active"


class Namespace(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: NamespaceStatus = Field(default_factory=NamespaceStatus)


class EventSource(Model):
    component: str | None = None
    host: str | None = None


class Event(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Event"] = "Event"
    involved_object: ObjectReference
    reason: str = ""
    message: str = ""
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = 1
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    source: EventSource = Field(default_factory=EventSource)
    reporting_component: str | None = None

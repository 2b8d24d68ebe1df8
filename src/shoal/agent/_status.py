"""Pure status derivation: what the agent knows of a pod's containers -> the Pod status it
reports, plus the restart/back-off arithmetic. No I/O and no asyncio, so every rule here
(phase, readiness, CrashLoopBackOff wording) is unit-tested directly.

The rules follow the kubelet's (``getPhase``, ``convertToAPIContainerStatuses``): a pod is
Pending while some container never started, Running while any runs or will be restarted,
and Succeeded/Failed once every container exited for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shoal._util import format_time, parse_time
from shoal.api import (
    Condition,
    Container,
    ContainerPort,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    PodIP,
    PodPhase,
    PodStatus,
    get_condition,
    set_condition,
)

RestartPolicy = Literal["Always", "OnFailure", "Never"]

UNKNOWN_EXIT_CODE = 137
"""What Kubernetes reports for a container whose exit status was lost (ContainerStatusUnknown)."""


@dataclass(frozen=True)
class Termination:
    """One finished run of a container: what ``state.terminated`` / ``lastState`` show."""

    exit_code: int
    reason: str
    started_at: float | None = None
    finished_at: float | None = None
    container_id: str | None = None
    message: str | None = None
    runtime: str = "process"
    """The driver that ran it: the scheme of the reported containerID (``runc://...``)."""

    def to_api(self) -> ContainerStateTerminated:
        return ContainerStateTerminated(
            exit_code=self.exit_code,
            reason=self.reason,
            message=self.message,
            started_at=_ts(self.started_at),
            finished_at=_ts(self.finished_at),
            container_id=f"{self.runtime}://{self.container_id}" if self.container_id else None,
        )

    @classmethod
    def from_api(cls, t: ContainerStateTerminated) -> Termination:
        """Read a termination back from a pod's status (an agent restart keeps lastState)."""
        cid = t.container_id
        runtime = "process"
        if cid and "://" in cid:
            runtime, cid = cid.split("://", 1)
        return cls(
            exit_code=t.exit_code if t.exit_code is not None else UNKNOWN_EXIT_CODE,
            reason=t.reason or "",
            started_at=_parse_ts(t.started_at),
            finished_at=_parse_ts(t.finished_at),
            container_id=cid,
            message=t.message,
            runtime=runtime,
        )


@dataclass
class ContainerRecord:
    """Everything the agent tracks about one container of a pod, mutated by the pod worker
    and read by the pure functions below. Exactly one of: running (``running_since``),
    finished for good (``terminated``), or waiting (``waiting_reason``)."""

    name: str
    image: str = ""
    restart_count: int = 0
    attempt: int | None = None
    """Attempt number of the process last started (None: never started by any agent)."""
    container_id: str | None = None
    running_since: float | None = None
    """Unix time the current process started; None when it is not running."""
    terminated: Termination | None = None
    """Set once the container exited and will not be restarted."""
    last_termination: Termination | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    ready: bool = False
    host_ports: dict[int, int] = field(default_factory=dict)
    backoff_steps: int = 0
    """Consecutive restarts without a long enough run in between (drives the back-off)."""
    next_start: float = 0.0
    """Monotonic time before which no (re)start is attempted."""
    restart_pending: bool = False
    """The container exited and will be started again (which counts as a restart)."""
    runtime: str = "process"
    """Driver name: the scheme of the reported containerID."""

    @property
    def running(self) -> bool:
        return self.running_since is not None

    @property
    def done(self) -> bool:
        return self.terminated is not None and not self.running


# --- restarts ----------------------------------------------------------------------------------


def should_restart(policy: RestartPolicy, exit_code: int, liveness_killed: bool = False) -> bool:
    """Whether an exited container is started again. A liveness kill is a failure whatever
    exit code the process chose on SIGTERM."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0 or liveness_killed
    return False


def restart_delay(steps: int, initial: float, cap: float) -> float:
    """Back-off before restart number ``steps + 1`` since the last reset.

    As the kubelet does: the first restart is immediate, then ``initial`` doubling up to
    ``cap`` (10 s, 20 s, 40 s ... 300 s by default).
    """
    if steps <= 0:
        return 0.0
    return float(min(cap, initial * (2 ** min(steps - 1, 62))))


def format_duration(seconds: float) -> str:
    """A duration the way Go prints one (``200ms``, ``10s``, ``1m20s``, ``5m0s``), because the
    CrashLoopBackOff message users grep for is the kubelet's, which is Go's."""
    if seconds < 1:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms else "0s"
    total = round(seconds, 3)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


def pod_display_name(name: str, namespace: str, uid: str) -> str:
    """``name_namespace(uid)``: how the kubelet names a pod in messages."""
    return f"{name}_{namespace}({uid})"


def backoff_message(delay: float, container: str, pod: str) -> str:
    """The kubelet's CrashLoopBackOff waiting message (``pod`` from pod_display_name)."""
    return f"back-off {format_duration(delay)} restarting failed container={container} pod={pod}"


# --- status ------------------------------------------------------------------------------------


def _ts(t: float | None) -> str | None:
    return format_time(t) if t is not None else None


def _parse_ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def reported_ports(spec: Container, host_ports: dict[int, int]) -> list[ContainerPort]:
    """The spec's ports with the host port each one actually listens on (shoal extension the
    endpoints controller reads). Empty until the runtime assigned ports."""
    if not host_ports:
        return []
    return [
        ContainerPort(
            container_port=p.container_port,
            host_port=host_ports.get(p.container_port, p.host_port),
            protocol=p.protocol,
            name=p.name,
        )
        for p in spec.ports
    ]


def container_status(rec: ContainerRecord, spec: Container) -> ContainerStatus:
    """The API ContainerStatus of one record."""
    state = ContainerState()
    if rec.running:
        state.running = ContainerStateRunning(started_at=_ts(rec.running_since))
    elif rec.terminated is not None:
        state.terminated = rec.terminated.to_api()
    else:
        state.waiting = ContainerStateWaiting(
            reason=rec.waiting_reason, message=rec.waiting_message
        )
    last = ContainerState()
    if rec.last_termination is not None:
        last.terminated = rec.last_termination.to_api()
    return ContainerStatus(
        name=rec.name,
        ready=rec.running and rec.ready,
        started=rec.running,
        restart_count=rec.restart_count,
        state=state,
        last_state=last,
        image=spec.image or rec.image,
        container_id=f"{rec.runtime}://{rec.container_id}" if rec.container_id else None,
        ports=reported_ports(spec, rec.host_ports),
    )


def pod_phase(policy: RestartPolicy, statuses: list[ContainerStatus]) -> PodPhase:
    """The kubelet's getPhase over container statuses."""
    waiting = running = stopped = succeeded = 0
    for cs in statuses:
        if cs.state.running is not None:
            running += 1
        elif cs.state.terminated is not None:
            stopped += 1
            if cs.state.terminated.exit_code == 0:
                succeeded += 1
        elif cs.last_state.terminated is not None:
            stopped += 1  # waiting to be restarted after an exit
        else:
            waiting += 1
    if waiting > 0 or not statuses:
        return "Pending"
    if running > 0:
        return "Running"
    if policy == "Always":
        return "Running"  # every container is on its way back
    if stopped == succeeded:
        return "Succeeded"
    if policy == "Never":
        return "Failed"
    return "Running"  # OnFailure: the failed ones are being restarted


def _condition(type_: str, ok: bool, reason: str | None, message: str | None) -> Condition:
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=None if ok else reason,
        message=None if ok else message,
    )


def build_pod_status(
    *,
    policy: RestartPolicy,
    containers: list[Container],
    records: dict[str, ContainerRecord],
    previous: PodStatus,
    scheduled: Condition | None,
    address: str,
    start_time: str,
    now: float,
    terminal_phase: PodPhase | None = None,
    pod_ips: list[str] | None = None,
) -> PodStatus:
    """The whole pod status to report.

    ``previous`` is the status this agent last derived (its conditions keep their
    lastTransitionTime unless their status changes, so an unchanged pod yields an identical
    dict and no write). ``scheduled`` is the scheduler's PodScheduled condition, kept as is
    (when there is none, PodScheduled=True is reported, as the kubelet does).
    ``terminal_phase`` pins Succeeded/Failed: a finished pod never runs again.
    """
    statuses = [container_status(records[c.name], c) for c in containers]
    phase = terminal_phase or pod_phase(policy, statuses)
    stamp = format_time(now)
    if scheduled is None:
        # A pod created with spec.nodeName never met a scheduler; like the kubelet, report
        # it scheduled (keeping the time we first said so).
        scheduled = get_condition(previous.conditions, "PodScheduled") or Condition(
            type="PodScheduled", status="True", last_transition_time=stamp
        )
    conditions = [c.model_copy() for c in previous.conditions if c.type != "PodScheduled"]
    conditions.insert(0, scheduled.model_copy())
    unready = [cs.name for cs in statuses if not cs.ready]
    if phase in ("Succeeded", "Failed"):
        reason, message = "PodCompleted", None
    else:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    set_condition(conditions, Condition(type="Initialized", status="True"), stamp)
    for type_ in ("ContainersReady", "Ready"):
        set_condition(conditions, _condition(type_, not unready, reason, message), stamp)
    order = {"PodScheduled": 0, "Initialized": 1, "ContainersReady": 2, "Ready": 3}
    conditions.sort(key=lambda c: order.get(c.type, 9))
    return PodStatus(
        phase=phase,
        conditions=conditions,
        container_statuses=statuses,
        pod_ip=pod_ips[0] if pod_ips else address,
        pod_ips=[PodIP(ip=ip) for ip in pod_ips or []],
        host_ip=address,
        start_time=start_time,
    )


def is_terminal(phase: str | None) -> bool:
    return phase in ("Succeeded", "Failed")


__all__ = [
    "UNKNOWN_EXIT_CODE",
    "ContainerRecord",
    "Termination",
    "backoff_message",
    "build_pod_status",
    "container_status",
    "format_duration",
    "is_terminal",
    "pod_display_name",
    "pod_phase",
    "reported_ports",
    "restart_delay",
    "should_restart",
]

"""Pure translation of a pod's spec into what the runtime and the prober need."""

from __future__ import annotations

import os

from shoal.api import Container, Pod, cpu_millis, memory_bytes
from shoal.runtime import ContainerConfig, PortRequest


def container_config(pod: Pod, container: Container, attempt: int) -> ContainerConfig:
    """The driver's view of one container: command line, env as a dict (later entries win,
    as in Kubernetes), working directory, declared ports and limits."""
    limits = container.resources.limits
    cpu = limits.get("cpu")
    memory = limits.get("memory")
    return ContainerConfig(
        pod_uid=pod.metadata.uid or "",
        pod_name=pod.metadata.name,
        namespace=pod.metadata.namespace or "default",
        name=container.name,
        attempt=attempt,
        image=container.image or "",
        command=list(container.command),
        args=list(container.args),
        env={e.name: e.value for e in container.env},
        working_dir=container.working_dir or "",
        ports=[
            PortRequest(container_port=p.container_port, name=p.name or "", protocol=p.protocol)
            for p in container.ports
        ],
        cpu_limit_millis=cpu_millis(cpu) if cpu is not None else None,
        memory_limit_bytes=memory_bytes(memory) if memory is not None else None,
    )


def resolve_port(container: Container, port: int | str, host_ports: dict[int, int]) -> int | None:
    """The host port a probe must reach for ``port`` (a number or a named containerPort).

    Process containers listen on host ports the driver picked, so a declared containerPort is
    translated; an undeclared number is taken literally. None for an unknown port name.
    """
    if isinstance(port, str):
        if port.isdigit():
            port = int(port)
        else:
            named = next((p for p in container.ports if p.name == port), None)
            if named is None:
                return None
            port = named.container_port
    return host_ports.get(port, port)


def probe_env(pod: Pod, container: Container, host_ports: dict[int, int]) -> dict[str, str]:
    """Environment for an exec probe: the variables the container itself was given (host
    basics, pod identity, ports, then the spec's env), so a probe script sees what the
    process sees."""
    env = {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"}
    for key in ("HOME", "LANG", "LC_ALL"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    env["HOSTNAME"] = pod.metadata.name
    env["SHOAL_POD_NAME"] = pod.metadata.name
    env["SHOAL_POD_NAMESPACE"] = pod.metadata.namespace or "default"
    env["SHOAL_POD_UID"] = pod.metadata.uid or ""
    if container.ports and container.ports[0].container_port in host_ports:
        env["PORT"] = str(host_ports[container.ports[0].container_port])
    for p in container.ports:
        if p.name and p.container_port in host_ports:
            env["SHOAL_PORT_" + p.name.upper().replace("-", "_")] = str(
                host_ports[p.container_port]
            )
    env.update({e.name: e.value for e in container.env})
    return env

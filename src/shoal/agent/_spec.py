"""Pure translation of a pod's spec into what the runtime and the prober need."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from shoal.agent._config import AgentConfig
from shoal.agent._status import pod_display_name
from shoal.api import Container, Pod, cpu_millis, memory_bytes
from shoal.network._ipam import dns_vip
from shoal.runtime import ContainerConfig, Mount, PortRequest, SecurityConfig


def merged_security(pod: Pod, container: Container) -> SecurityConfig:
    """The container's securityContext over the pod's: each field the container sets wins,
    as the kubelet merges them (``DetermineEffectiveSecurityContext``)."""
    psc = pod.spec.security_context
    csc = container.security_context
    user = csc.run_as_user if csc and csc.run_as_user is not None else None
    group = csc.run_as_group if csc and csc.run_as_group is not None else None
    if user is None and psc is not None:
        user = psc.run_as_user
    if group is None and psc is not None:
        group = psc.run_as_group
    return SecurityConfig(
        run_as_user=user,
        run_as_group=group,
        read_only_root_filesystem=bool(csc and csc.read_only_root_filesystem),
        privileged=bool(csc and csc.privileged),
    )


def run_as_non_root(pod: Pod, container: Container) -> bool:
    csc, psc = container.security_context, pod.spec.security_context
    if csc is not None and csc.run_as_non_root is not None:
        return csc.run_as_non_root
    return bool(psc and psc.run_as_non_root)


def non_root_violation(pod: Pod, container: Container, image_user: str) -> str | None:
    """Why the container may not start under ``runAsNonRoot`` (None when it may), in the
    kubelet's words (``verifyRunAsNonRoot``); reported as CreateContainerConfigError.

    ``image_user`` is who the container runs as when no runAsUser is set: the image's USER
    (``uid``, ``uid:gid``, ``name``...; empty means root), or for drivers without images the
    agent's own uid.
    """
    if not run_as_non_root(pod, container):
        return None
    shown = pod_display_name(pod.metadata.name, pod.namespace or "default", pod.metadata.uid or "")
    where = f'(pod: "{shown}", container: {container.name})'
    uid = merged_security(pod, container).run_as_user
    if uid is not None:
        return f"container's runAsUser breaks non-root policy {where}" if uid == 0 else None
    user = image_user.split(":", 1)[0]
    if not user:
        return f"container has runAsNonRoot and image will run as root {where}"
    if not user.isdigit():
        return (
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {where}"
        )
    if int(user) == 0:
        return f"container has runAsNonRoot and image will run as root {where}"
    return None


def volume_mounts(container: Container, volume_paths: Mapping[str, Path]) -> list[Mount]:
    """The container's volumeMounts as host sources: the volume's directory (or file), or
    its ``subPath`` inside it. Raises KeyError for a volume that was not set up."""
    mounts = []
    for m in container.volume_mounts:
        source = volume_paths[m.name]
        if m.sub_path:
            source = source / m.sub_path
        mounts.append(Mount(source=source, destination=m.mount_path, read_only=m.read_only))
    return mounts


def container_config(
    pod: Pod,
    container: Container,
    attempt: int,
    volume_paths: Mapping[str, Path] | None = None,
) -> ContainerConfig:
    """The driver's view of one container: command line, env as a dict (later entries win,
    as in Kubernetes), working directory, declared ports, requests and limits (a request
    left out defaults to the limit, as API defaulting does in Kubernetes), volume mounts
    (``volume_paths``: volume name -> its host path, from the pod's volume setup), the
    merged securityContext and the hostname (``spec.hostname`` or the pod's name)."""
    limits = container.resources.limits
    requests = container.resources.requests
    cpu = limits.get("cpu")
    memory = limits.get("memory")
    cpu_req = requests.get("cpu", cpu)
    memory_req = requests.get("memory", memory)
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
        cpu_request_millis=cpu_millis(cpu_req) if cpu_req is not None else None,
        memory_request_bytes=memory_bytes(memory_req) if memory_req is not None else None,
        hostname=pod.spec.hostname or pod.metadata.name,
        mounts=volume_mounts(container, volume_paths or {}),
        security=merged_security(pod, container),
    )


def with_pod_network(
    config: ContainerConfig, netns_path: str, agent: AgentConfig
) -> ContainerConfig:
    """``config`` joined to the pod's network namespace, with a resolv.conf that names
    shoal's DNS at the service address and searches the pod's namespace first (as the
    kubelet writes it: ``NAME`` resolves to ``NAME.NAMESPACE.svc.cluster.local``)."""
    if not agent.dns_target:
        return replace(config, network_namespace=netns_path)
    domain = agent.cluster_domain
    return replace(
        config,
        network_namespace=netns_path,
        dns_nameservers=[dns_vip()],
        dns_searches=[f"{config.namespace}.svc.{domain}", f"svc.{domain}", domain],
        dns_options=["ndots:5"],
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

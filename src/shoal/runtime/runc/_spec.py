"""Pure pieces of the runc driver: the OCI ``config.json`` and what goes into it.

Nothing here touches the filesystem or spawns anything, so each rule (Kubernetes' command/env
merge, user resolution against an image's ``/etc/passwd``, cgroup arithmetic, Docker's
security defaults) is unit-tested on plain values.

Security defaults are Docker's (moby ``oci/defaults.go``): its capability set, masked and
read-only ``/proc``/``/sys`` paths, a deny-all device cgroup (runc adds the standard
``/dev/null``-style devices itself) and ``noNewPrivileges``. No seccomp profile is applied:
Docker's default profile is a large syscall allow-list that would have to be vendored and kept
in step with the kernel; namespaces, the capability set and the masked paths are the layers
kept here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import DriverError
from shoal.runtime._procutil import DEFAULT_PATH, check_safe, port_env_name
from shoal.runtime._protocol import ContainerConfig, SecurityConfig
from shoal.runtime.images._model import ImageConfig

CFS_PERIOD_US = 100_000
"""The kubelet's CFS period: a quota of ``millis * 100`` us per 100 ms is ``millis`` of a CPU."""
MIN_SHARES = 2
"""The kernel's minimum cpu.shares; also what the kubelet gives a container with no request."""

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
"""Docker's default capability set."""

CAP_NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
"""Every capability runc 1.1 knows, indexed by its number (``CAP_CHOWN`` is 0)."""

ALL_CAPS_MASK = (1 << len(CAP_NAMES)) - 1


def capabilities(*, privileged: bool, bounding_mask: int = ALL_CAPS_MASK) -> list[str]:
    """Docker's default set, or every capability for a privileged container -- in both cases
    only those in the agent's own bounding set (``CapBnd``): runc cannot grant more than it
    holds, and asking fails the start with "unable to apply caps"."""
    wanted = CAP_NAMES if privileged else DEFAULT_CAPABILITIES
    return [c for c in wanted if bounding_mask >> CAP_NAMES.index(c) & 1]


MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
"""Docker's masked paths: host information a container has no business reading."""

READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


def check_cgroup_parent(value: str) -> str:
    """An absolute cgroup path made of safe components, without a trailing slash."""
    parts = value.strip("/").split("/")
    if not value.startswith("/") or not parts or parts == [""]:
        raise DriverError(f"invalid cgroup_parent {value!r}: must be an absolute path like /shoal")
    for part in parts:
        check_safe("cgroup_parent component", part)
    return "/" + "/".join(parts)


# --- command, env, working dir ------------------------------------------------------------


def merge_argv(config: ContainerConfig, image: ImageConfig | None) -> list[str]:
    """Kubernetes' rule: ``command`` replaces ENTRYPOINT and drops CMD; ``args`` alone replace
    CMD; neither runs the image's ENTRYPOINT + CMD."""
    entrypoint = list(image.entrypoint) if image else []
    cmd = list(image.cmd) if image else []
    if config.command:
        argv = [*config.command, *config.args]
    elif config.args:
        argv = [*entrypoint, *config.args]
    else:
        argv = [*entrypoint, *cmd]
    if not argv:
        source = f'image "{config.image}" has no ENTRYPOINT or CMD' if config.image else "no image"
        raise DriverError(
            f"container {config.name!r} of pod {config.namespace}/{config.pod_name}: "
            f"nothing to run ({source} and the container has no command or args)"
        )
    return argv


def identity_env(
    config: ContainerConfig, hostname: str, host_ports: Mapping[int, int], host_ip: str
) -> dict[str, str]:
    """What the agent tells every container about itself, as the process driver does."""
    env = {
        "HOSTNAME": hostname,
        "SHOAL_POD_NAME": config.pod_name,
        "SHOAL_POD_NAMESPACE": config.namespace,
        "SHOAL_POD_UID": config.pod_uid,
        "SHOAL_HOST_IP": host_ip,
    }
    if config.ports:
        env["PORT"] = str(host_ports[config.ports[0].container_port])
    for req in config.ports:
        if req.name:
            env[port_env_name(req.name)] = str(host_ports[req.container_port])
    return env


def merge_env(
    image_env: Sequence[str], identity: Mapping[str, str], spec_env: Mapping[str, str]
) -> dict[str, str]:
    """Image env, then the pod identity, then the spec's env (which wins); PATH defaulted.

    An image entry without ``=`` is kept as an empty value, as Docker does.
    """
    env: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        if key:
            env[key] = value
    env.update(identity)
    env.update(spec_env)
    if not env.get("PATH"):
        env["PATH"] = DEFAULT_PATH
    return env


def working_dir(config: ContainerConfig, image: ImageConfig | None) -> str:
    """The spec's workingDir, else the image's, else ``/``; it must be absolute."""
    cwd = config.working_dir or (image.working_dir if image else "") or "/"
    if not cwd.startswith("/"):
        raise DriverError(f"container {config.name!r}: workingDir {cwd!r} must be an absolute path")
    return cwd


# --- users --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    """``name:x:uid:gid:gecos:home:shell`` lines; malformed lines are skipped as libc does."""
    entries: list[PasswdEntry] = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            uid, gid = int(parts[2]), int(parts[3])
        except ValueError:
            continue
        entries.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """``name:x:gid:member,member`` lines; malformed lines are skipped."""
    entries: list[GroupEntry] = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else []) if m)
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def resolve_user(
    security: SecurityConfig, image_user: str, passwd: str | None, group: str | None
) -> User:
    """Who the container runs as: securityContext first, else the image's USER.

    Names are looked up in the container's own ``/etc/passwd`` and ``/etc/group`` (``None``
    when the rootfs has none). As containerd does, a uid without a group takes the primary
    group of its passwd entry (else 0), and a named user's group memberships become its
    supplementary groups.
    """
    users = parse_passwd(passwd or "")
    groups = parse_group(group or "")
    user_part, _, group_part = image_user.partition(":")
    entry: PasswdEntry | None = None
    if security.run_as_user is not None:
        uid = security.run_as_user
        entry = next((u for u in users if u.uid == uid), None)
    elif user_part == "":
        uid = 0
        entry = next((u for u in users if u.uid == 0), None)
    elif user_part.isdigit():
        uid = int(user_part)
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            where = "no /etc/passwd in the image" if passwd is None else "not in /etc/passwd"
            raise DriverError(f"image USER {image_user!r}: user {user_part!r} {where}")
        uid = entry.uid
    gid = entry.gid if entry else 0
    if security.run_as_group is not None:
        gid = security.run_as_group
    elif group_part and security.run_as_user is None:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = next((g for g in groups if g.name == group_part), None)
            if found is None:
                where = "no /etc/group in the image" if group is None else "not in /etc/group"
                raise DriverError(f"image USER {image_user!r}: group {group_part!r} {where}")
            gid = found.gid
    extra: tuple[int, ...] = ()
    if entry is not None:
        extra = tuple(sorted({g.gid for g in groups if entry.name in g.members and g.gid != gid}))
    home = entry.home if entry and entry.home else ("/root" if uid == 0 else "/")
    return User(uid=uid, gid=gid, additional_gids=extra, home=home)


# --- cgroup resources ---------------------------------------------------------------------


def cpu_shares(request_millis: int | None) -> int:
    """The kubelet's MilliCPUToShares: ``millis * 1024 / 1000``, at least 2 (2 with no request)."""
    if not request_millis:
        return MIN_SHARES
    return max(MIN_SHARES, request_millis * 1024 // 1000)


def cpu_quota(limit_millis: int | None) -> int | None:
    """CFS quota in us per ``CFS_PERIOD_US``; None means unlimited. At least 1000 us (the
    kernel's minimum), as the kubelet clamps it."""
    if limit_millis is None or limit_millis <= 0:
        return None
    return max(1000, limit_millis * CFS_PERIOD_US // 1000)


def resources(config: ContainerConfig, default_pids_limit: int) -> dict[str, Any]:
    """``linux.resources``: deny-all devices, shares/quota, memory without swap, pids."""
    privileged = config.security.privileged
    res: dict[str, Any] = {
        "devices": [{"allow": privileged, "access": "rwm"}],
        "cpu": {"shares": cpu_shares(config.cpu_request_millis)},
        "pids": {"limit": config.pids_limit or default_pids_limit},
    }
    quota = cpu_quota(config.cpu_limit_millis)
    if quota is not None:
        res["cpu"]["quota"] = quota
        res["cpu"]["period"] = CFS_PERIOD_US
    if config.memory_limit_bytes:
        # swap == limit: the container may not swap at all, as the kubelet arranges.
        res["memory"] = {
            "limit": config.memory_limit_bytes,
            "swap": config.memory_limit_bytes,
        }
    return res


# --- the OCI config -----------------------------------------------------------------------


def bind_mount(source: str, destination: str, *, read_only: bool) -> dict[str, Any]:
    """A recursive, private bind mount (read-only when asked)."""
    options = ["rbind", "rprivate"]
    if read_only:
        options.append("ro")
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def tmpfs_mount(destination: str, mode: str = "1777") -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", f"mode={mode}"],
    }


def standard_mounts(*, privileged: bool) -> list[dict[str, Any]]:
    """Docker's default mounts: /proc, a tmpfs /dev, /dev/pts, /dev/shm, /dev/mqueue, a
    read-only /sys and cgroup tree (read-write for privileged containers)."""
    sys_ro = [] if privileged else ["ro"]
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", *sys_ro],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", *sys_ro],
        },
    ]


@dataclass(frozen=True)
class BundleSpec:
    """Everything ``build_config`` needs, already resolved by the driver."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: User
    hostname: str
    cgroups_path: str
    resources: dict[str, Any]
    readonly_root: bool = False
    privileged: bool = False
    network_namespace: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)
    """Added after the standard mounts, in order (sandbox binds, pod files, volumes)."""
    bounding_caps: int = ALL_CAPS_MASK
    """The agent's capability bounding set (``CapBnd``): nothing outside it is granted."""


def build_config(spec: BundleSpec) -> dict[str, Any]:
    """The OCI runtime ``config.json`` (spec 1.0.2) for runc."""
    caps = capabilities(privileged=spec.privileged, bounding_mask=spec.bounding_caps)
    user: dict[str, Any] = {"uid": spec.user.uid, "gid": spec.user.gid}
    if spec.user.additional_gids:
        user["additionalGids"] = list(spec.user.additional_gids)
    env = dict(spec.env)
    env.setdefault("HOME", spec.user.home)
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if spec.network_namespace:
        namespaces.append({"type": "network", "path": spec.network_namespace})
    linux: dict[str, Any] = {
        "cgroupsPath": spec.cgroups_path,
        "resources": spec.resources,
        "namespaces": namespaces,
    }
    if not spec.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": user,
            "args": list(spec.argv),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": not spec.privileged,
        },
        "root": {"path": "rootfs", "readonly": spec.readonly_root},
        "hostname": spec.hostname,
        "mounts": [*standard_mounts(privileged=spec.privileged), *spec.mounts],
        "linux": linux,
    }


def pod_hostname(config: ContainerConfig) -> str:
    """config.hostname or the pod name, cut to the 63 characters a hostname label may have."""
    name = (config.hostname or config.pod_name)[:63].rstrip("-.")
    return name or "localhost"


def hosts_file(hostname: str) -> str:
    """/etc/hosts as the kubelet writes it: localhost lines plus the pod's own name."""
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        f"127.0.1.1\t{hostname}\n"
    )


def resolv_conf(
    nameservers: Sequence[str], searches: Sequence[str], options: Sequence[str]
) -> str | None:
    """resolv.conf from the dns_* fields, or None when there are no nameservers (then the
    host's file is copied)."""
    if not nameservers:
        return None
    lines = [f"nameserver {ns}" for ns in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"

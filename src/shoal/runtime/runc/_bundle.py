"""Writing one container's OCI bundle: root filesystem, pod files, ``config.json``.

The file-system half of starting a container, kept out of the driver's state machine. It is
synchronous (mounts, small files) and the driver runs it in a thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.errors import DriverError
from shoal.runtime._protocol import ContainerConfig
from shoal.runtime.images._model import ResolvedImage
from shoal.runtime.runc import _rootfs as rfs
from shoal.runtime.runc import _spec as sp

HOST_RESOLV = Path("/etc/resolv.conf")
POD_FILES = (
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
)
"""Per-pod files (in ``pods/<uid>/``) bind-mounted over the image's, shared by its containers."""


@dataclass(frozen=True)
class BundleInputs:
    """What the driver has already decided for this attempt."""

    argv: list[str]
    cwd: str
    where: str
    """``container 'x' of pod ns/name``, prefixed to error messages."""
    cgroup_path: str
    host_ports: dict[int, int]
    host_ip: str
    default_pids_limit: int
    bounding_caps: int


def write_bundle(
    bundle: Path,
    pod_dir: Path,
    config: ContainerConfig,
    resolved: ResolvedImage | None,
    inputs: BundleInputs,
) -> None:
    """Fill the empty ``bundle`` dir: mount or lay out ``rootfs``, write the pod's files and
    ``config.json``. On error the caller unmounts and removes the bundle."""
    rootfs = bundle / "rootfs"
    readonly = config.security.read_only_root_filesystem
    mounts: list[dict[str, Any]] = []
    if resolved is not None:
        upper, work = bundle / "upper", bundle / "work"
        for d in (upper, work, rootfs):
            d.mkdir()
        rfs.mount_overlay(list(reversed(resolved.layer_dirs)), upper, work, rootfs)
        passwd = rfs.read_rootfs_file(rootfs, "etc/passwd")
        group = rfs.read_rootfs_file(rootfs, "etc/group")
        image_cfg = resolved.record.config
    else:
        readonly = True  # the sandbox root is an empty directory: nothing to write to
        for host, dest in rfs.prepare_sandbox(rootfs):
            mounts.append(sp.bind_mount(host, dest, read_only=True))
        mounts.append(sp.tmpfs_mount("/tmp"))
        passwd = rfs.read_rootfs_file(Path("/"), "etc/passwd")
        group = rfs.read_rootfs_file(Path("/"), "etc/group")
        image_cfg = None
    hostname = sp.pod_hostname(config)
    rfs.write_pod_files(
        pod_dir,
        hostname,
        sp.hosts_file(hostname),
        sp.resolv_conf(config.dns_nameservers, config.dns_searches, config.dns_options),
        HOST_RESOLV,
    )
    for file_name, dest in POD_FILES:
        # The sandbox's /etc is the host's, read-only: runc cannot create a missing file there.
        if resolved is None and not Path(dest).exists():
            continue
        mounts.append(sp.bind_mount(str(pod_dir / file_name), dest, read_only=readonly))
    for m in config.mounts:
        mounts.append(sp.bind_mount(str(m.source), m.destination, read_only=m.read_only))
    try:
        user = sp.resolve_user(config.security, image_cfg.user if image_cfg else "", passwd, group)
    except DriverError as exc:
        raise DriverError(f"{inputs.where}: {exc}") from None
    identity = sp.identity_env(config, hostname, inputs.host_ports, inputs.host_ip)
    spec = sp.BundleSpec(
        argv=inputs.argv,
        env=sp.merge_env(image_cfg.env if image_cfg else [], identity, config.env),
        cwd=inputs.cwd,
        user=user,
        hostname=hostname,
        cgroups_path=inputs.cgroup_path,
        resources=sp.resources(config, inputs.default_pids_limit),
        readonly_root=readonly,
        privileged=config.security.privileged,
        network_namespace=config.network_namespace,
        mounts=mounts,
        bounding_caps=inputs.bounding_caps,
    )
    (bundle / "config.json").write_text(json.dumps(sp.build_config(spec), indent=1))


def unmount_all(path: Path) -> None:
    """Unmount everything at or under ``path`` (deepest first) before it is deleted:
    rmtree through a live mount would delete the mounted files themselves."""
    for point in rfs.mounts_under(path):
        rfs.unmount(point)
    left = rfs.mounts_under(path)
    if left:
        raise DriverError(f"cannot unmount {left[0]}; refusing to delete {path}")


def bounding_caps() -> int:
    """This process's capability bounding set (``CapBnd`` in /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return sp.ALL_CAPS_MASK

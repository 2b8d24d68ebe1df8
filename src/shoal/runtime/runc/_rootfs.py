"""Container root filesystems: overlay mounts over image layers, and the host sandbox.

With an image, the root is an overlay: the image's unpacked layers as read-only lowerdirs
(shared by every container of the image, so the 50th container copies nothing) and a fresh
upper/work pair per attempt -- Kubernetes starts a *new* container on restart, so nothing a
crashed attempt wrote survives into the next.

Without an image the container gets the host sandbox, like Nomad's exec driver: an empty,
read-only root into which the host's /usr, /etc, /bin, /sbin and /lib* are bind-mounted
read-only (by runc, inside the container's mount namespace, so nothing shows on the host),
with the host's top-level symlinks (``/bin -> usr/bin`` on merged-/usr systems) recreated as
symlinks, and a private tmpfs /tmp.

mount(2)/umount2(2) are called through ctypes: one syscall instead of forking mount(8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from shoal.errors import DriverError
from shoal.runtime.runc._cgroups import parse_mountinfo

_MNT_DETACH = 2
_PAGE = 4096
SANDBOX_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Host top-level entries a sandboxed container sees (read-only)."""

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def mount_overlay(lower_top_first: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay at ``target``. The layer list is top (most recent) layer first."""
    if not lower_top_first:
        raise DriverError("cannot mount an image root: the image has no layers")
    for layer in lower_top_first:
        if not layer.is_dir():
            raise DriverError(f"image layer directory {layer} is missing")
    lower = ":".join(str(p) for p in lower_top_first)
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if "," in lower or len(data) >= _PAGE:
        raise DriverError(
            f"cannot mount the image root at {target}: the overlay options are "
            f"{len(data)} bytes (limit {_PAGE - 1}) or a layer path contains ','; "
            "use a shorter image store path"
        )
    rc = libc().mount(b"overlay", str(target).encode(), b"overlay", 0, data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise DriverError(f"mount overlay at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount ``target``; when busy (a process still has it open), detach it lazily."""
    path = str(target).encode()
    if libc().umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not a mount point (any more)
    if err == errno.EBUSY and libc().umount2(path, _MNT_DETACH) == 0:
        return
    raise DriverError(f"umount {target}: {os.strerror(ctypes.get_errno() or err)}")


def mounts_under(root: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    base = str(root).rstrip("/") + "/"
    found = {
        Path(m.mount_point)
        for m in parse_mountinfo(mountinfo)
        if m.mount_point == base[:-1] or m.mount_point.startswith(base)
    }
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def prepare_sandbox(rootfs: Path, host_root: Path = Path("/")) -> list[tuple[str, str]]:
    """Lay out an empty sandbox root: recreate the host's symlinked top-level dirs as symlinks
    and return ``(host path, container path)`` pairs to bind-mount read-only."""
    rootfs.mkdir(parents=True, exist_ok=True)
    binds: list[tuple[str, str]] = []
    for name in SANDBOX_DIRS:
        host = host_root / name
        if host.is_symlink():
            link = rootfs / name
            if not link.is_symlink():
                link.symlink_to(os.readlink(host))
        elif host.is_dir():
            binds.append((str(host), "/" + name))
    return binds


def read_rootfs_file(rootfs: Path, relative: str) -> str | None:
    """Read a small file of a container root (``etc/passwd``) without following symlinks out
    of it: a hostile image could point ``/etc/passwd`` at a host file. None when absent."""
    current = rootfs
    for part in Path(relative).parts:
        current = current / part
        if current.is_symlink():
            return None
    try:
        if not current.is_file():
            return None
        with open(current, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def write_pod_files(
    pod_dir: Path, hostname: str, hosts: str, resolv: str | None, host_resolv: Path
) -> None:
    """hostname, hosts and resolv.conf shared by every container of a pod (bind-mounted)."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    (pod_dir / "hostname").write_text(hostname + "\n")
    (pod_dir / "hosts").write_text(hosts)
    if resolv is not None:
        (pod_dir / "resolv.conf").write_text(resolv)
    else:
        try:
            shutil.copyfile(host_resolv, pod_dir / "resolv.conf")
        except OSError:
            (pod_dir / "resolv.conf").write_text("")


def reset_dir(path: Path) -> None:
    """Remove ``path`` (which must hold no mounts) and create it empty."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)

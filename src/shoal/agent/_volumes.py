"""Pod volumes on the node: what a volumeMount's host source is, made ready before the
containers start and removed once the pod is gone.

* ``emptyDir``: a directory ``<data_dir>/pods/<uid>/volumes/<name>``, mode 0777 as the
  kubelet makes it (so a container running as any user can write), group-owned by the pod's
  fsGroup when one is set. ``medium: Memory`` mounts a tmpfs there (sized by ``sizeLimit``)
  when the agent is root; without root it stays a plain directory on disk, which behaves the
  same for the containers except for where the bytes live.
* ``hostPath``: the node's path itself, created for the ``*OrCreate`` types and checked for
  ``Directory``/``File``, with the kubelet's "hostPath type check failed" messages.
* ``subPath``: a directory inside the volume, created on first use, and refused if it
  resolves (through a symlink) outside the volume.

Setup failures are data, not exceptions: the pod worker reports them as FailedMount events
and keeps the pod's containers waiting (ContainerCreating), retrying, as the kubelet does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shoal.api import Container, Pod, Volume, memory_bytes

log = logging.getLogger("shoal.agent.volumes")

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2


@dataclass
class VolumeSetup:
    """The outcome of setting up a pod's volumes."""

    paths: dict[str, Path] = field(default_factory=dict)
    """Volume name -> host path, for every volume that is ready."""
    errors: dict[str, str] = field(default_factory=dict)
    """Volume name -> why it is not (the kubelet's FailedMount message)."""

    @property
    def ok(self) -> bool:
        return not self.errors


class PodVolumes:
    """Sets up and tears down the volumes of the pods on this node, under ``root``
    (``<data_dir>/pods``). One instance per agent; stateless apart from the filesystem, so
    an agent restart finds the same directories again."""

    def __init__(self, root: Path, *, use_tmpfs: bool | None = None) -> None:
        """``use_tmpfs`` (default: when running as root) mounts a tmpfs for Memory
        emptyDirs."""
        self.root = Path(root)
        self.use_tmpfs = os.geteuid() == 0 if use_tmpfs is None else use_tmpfs

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"invalid pod uid {uid!r}")
        return self.root / uid

    def setup(self, pod: Pod) -> VolumeSetup:
        """Make every volume of ``pod`` ready (idempotent: called again after an agent
        restart or a failed attempt, it only finishes what is missing)."""
        result = VolumeSetup()
        uid = pod.metadata.uid or ""
        fs_group = pod.spec.security_context.fs_group if pod.spec.security_context else None
        for volume in pod.spec.volumes:
            try:
                if volume.empty_dir is not None:
                    path = self._empty_dir(uid, volume, fs_group)
                elif volume.host_path is not None:
                    path = _host_path(volume)
                else:
                    raise _SetupError("no volume source")
            except (_SetupError, OSError) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                if isinstance(exc, OSError) and exc.filename:
                    detail = f"{detail}: {exc.filename}"
                result.errors[volume.name] = (
                    f'MountVolume.SetUp failed for volume "{volume.name}" : {detail}'
                )
                continue
            result.paths[volume.name] = path
        return result

    def _empty_dir(self, uid: str, volume: Volume, fs_group: int | None) -> Path:
        assert volume.empty_dir is not None
        path = self.pod_dir(uid) / "volumes" / volume.name
        path.mkdir(parents=True, exist_ok=True)
        if volume.empty_dir.medium == "Memory" and self.use_tmpfs and not os.path.ismount(path):
            size = volume.empty_dir.size_limit
            try:
                _mount_tmpfs(path, memory_bytes(size) if size is not None else None)
            except OSError as exc:
                log.warning("tmpfs for emptyDir %s unavailable (%s); using disk", path, exc)
        mode = 0o777
        if fs_group is not None and os.geteuid() == 0:
            os.chown(path, -1, fs_group)
            mode |= stat.S_ISGID  # files created inside inherit the fsGroup
        os.chmod(path, mode)
        return path

    def subpaths(self, container: Container, paths: Mapping[str, Path]) -> str | None:
        """Create the ``subPath`` directories ``container`` mounts; why not, if impossible
        (reported as CreateContainerConfigError)."""
        for m in container.volume_mounts:
            if not m.sub_path or m.name not in paths:
                continue
            base = paths[m.name]
            target = base / m.sub_path
            problem = ""
            try:
                if base.is_dir():
                    if not target.exists():
                        target.mkdir(mode=stat.S_IMODE(base.stat().st_mode), parents=True)
                    real_base = os.path.realpath(base)
                    if not os.path.realpath(target).startswith(real_base.rstrip("/") + "/"):
                        problem = "it resolves outside the volume"
                else:
                    problem = "the volume is not a directory"
            except OSError as exc:
                problem = exc.strerror or str(exc)
            if problem:
                return (
                    f'failed to prepare subPath "{m.sub_path}" for volumeMount "{m.name}" of '
                    f'container "{container.name}": {problem}'
                )
        return None

    def teardown(self, uid: str) -> None:
        """Remove everything the pod's volumes left on the node (hostPaths are the node's
        and stay). Only call once none of the pod's containers runs."""
        pod_dir = self.pod_dir(uid)
        if not pod_dir.exists():
            return
        for mount in sorted(_mounts_under(pod_dir), key=lambda p: len(str(p)), reverse=True):
            _unmount(mount)
        shutil.rmtree(pod_dir, ignore_errors=True)

    def release_mounts(self) -> None:
        """Unmount every tmpfs this agent mounted (their contents are lost, as on a node
        reboot): for an agent that stops its pods on exit and must leave no mounts behind."""
        for mount in sorted(_mounts_under(self.root), key=lambda p: len(str(p)), reverse=True):
            _unmount(mount)

    def sweep(self, keep: Iterable[str]) -> list[str]:
        """Tear down the directories of pods not in ``keep`` (pods deleted while no agent
        ran). Returns the uids removed."""
        keep_set = set(keep)
        try:
            entries = [p.name for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        removed = [uid for uid in entries if uid not in keep_set]
        for uid in removed:
            self.teardown(uid)
        return removed


class _SetupError(Exception):
    """A volume cannot be set up; the message is the kubelet's detail text."""


def _host_path(volume: Volume) -> Path:
    """The checked (or created) hostPath, per its type."""
    assert volume.host_path is not None
    path = Path(volume.host_path.path)
    kind = volume.host_path.type
    if kind == "DirectoryOrCreate":
        if not path.exists():
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        kind = "Directory"
    elif kind == "FileOrCreate":
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
                os.close(fd)
        kind = "File"
    if kind == "Directory" and not path.is_dir():
        raise _SetupError(f"hostPath type check failed: {path} is not a directory")
    if kind == "File" and not path.is_file():
        raise _SetupError(f"hostPath type check failed: {path} is not a file")
    return path


# --- mounts (tmpfs for Memory emptyDirs) ------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, size: int | None) -> None:
    options = "mode=0777" + (f",size={size}" if size else "")
    rc = _libc().mount(
        b"tmpfs", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def _unmount(target: Path) -> None:
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("cannot unmount %s: %s", target, os.strerror(err))


def _decode_mountinfo_path(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _mounts_under(root: Path) -> list[Path]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            point = _decode_mountinfo_path(fields[4])
            if point.startswith(prefix) or point == str(root):
                found.append(Path(point))
    return found

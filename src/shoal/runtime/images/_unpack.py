"""Unpacking OCI layer tarballs safely, with whiteouts, for overlayfs or into one flat rootfs.

Every member is checked before anything is written: its name must stay inside the layer root
(no absolute paths, no ``..``), it must be a regular file, directory, symlink or hardlink (device
nodes and FIFOs are refused), a hardlink must name a path inside the root, and no member may be
written *through* a symlink whose target leaves the root, whether that symlink comes from an
earlier member of the same layer or (in flatten mode) from an earlier layer already on disk.

Symlink *targets* are not restricted: inside a container ``/bin/sh -> /bin/busybox`` resolves
against the container's root, and real images are full of such links. The danger is only ever
the host following one during extraction, which the checks above prevent. Code that later opens
paths inside an unpacked rootfs must resolve them in the same spirit (never follow symlinks
with the host's root).

Modes and ownership are kept (numeric uid/gid, chown only when running as root), except that
setuid/setgid bits are stripped.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from shoal.runtime.images._blobs import ImageError, parse_digest
from shoal.runtime.images._locking import flock

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_SUPPORTED = {LAYER_TAR, LAYER_TAR_GZIP, DOCKER_LAYER_TAR_GZIP}

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_MAX_SYMLINK_HOPS = 40
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

UnpackMode = Literal["overlay", "flatten"]


class HostileLayerError(ImageError):
    """A layer tries to write outside its root or create a device node. Nothing was written.

    ``member`` names the offending tar entry and ``reason`` says why; the image should not be run.
    """

    def __init__(self, member: str, reason: str, *, context: str = "") -> None:
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}refusing layer: member {member!r} {reason}")
        self.member = member
        self.reason = reason


class CorruptLayerError(ImageError):
    """The layer blob is not a readable (optionally gzipped) tarball; fetch it again."""


class UnsupportedLayerError(ImageError):
    """The layer cannot be unpacked here (unknown compression, or overlay whiteouts without root)."""


def unpack_layer(
    blob: Path,
    dest: Path,
    *,
    media_type: str = LAYER_TAR_GZIP,
    mode: UnpackMode = "flatten",
) -> list[str]:
    """Unpack the layer tarball ``blob`` into ``dest``; return the whiteout entries it held.

    ``mode="flatten"`` applies the layer on top of whatever ``dest`` already holds (earlier
    layers, applied in order): a whiteout ``.wh.<name>`` deletes ``<name>`` and an opaque marker
    empties its directory before this layer's entries are added. ``mode="overlay"`` creates
    ``dest`` (which must not exist or be empty) as one overlayfs lower directory, with whiteouts as
    0/0 character devices and opaque directories marked with ``trusted.overlay.opaque=y``; that
    needs root when the layer has whiteouts. It is built in a temporary sibling and renamed into
    place, so a failed layer leaves nothing behind. In both modes a hostile layer raises
    :class:`HostileLayerError` before anything is written.

    The returned list holds the whiteout member paths (``a/.wh.b``, ``d/.wh..wh..opq``).
    """
    blob, dest = Path(blob), Path(dest)
    _check_format(blob, media_type)
    # "r:*" sniffs the content (gzip magic or plain tar) rather than trusting the media type.
    with tarfile.open(blob, mode="r:*") as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptLayerError(f"layer {blob.name} is not a readable tarball: {exc}") from exc
        if mode == "flatten":
            dest.mkdir(parents=True, exist_ok=True)
            plan = _validate(members, dest)
            _apply_whiteouts(dest, plan)
            _extract(tar, plan.entries, dest)
            return plan.whiteout_names
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise FileExistsError(f"overlay layer directory {dest} exists and is not empty")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
        try:
            plan = _validate(members, tmp)
            if plan.whiteout_names and os.geteuid() != 0:
                raise UnsupportedLayerError(
                    f"layer {blob.name} has whiteouts, which overlay mode represents as device "
                    "nodes and xattrs that need root; unpack with mode='flatten' instead"
                )
            _extract(tar, plan.entries, tmp)
            _write_overlay_whiteouts(tmp, plan)
            tmp.chmod(0o755)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return plan.whiteout_names


class _Plan:
    """The validated members of one layer, split into entries and whiteouts."""

    def __init__(self) -> None:
        self.entries: list[tarfile.TarInfo] = []
        self.whiteouts: list[tuple[str, ...]] = []
        self.opaque_dirs: list[tuple[str, ...]] = []
        self.whiteout_names: list[str] = []


def _check_format(blob: Path, media_type: str) -> None:
    if "zstd" in media_type:
        raise UnsupportedLayerError(f"zstd layers ({media_type}) are not supported yet")
    if "tar" not in media_type:
        raise UnsupportedLayerError(f"unsupported layer media type {media_type!r}")
    with blob.open("rb") as fh:
        if fh.read(4) == _ZSTD_MAGIC:
            raise UnsupportedLayerError(f"layer {blob.name} is zstd-compressed (not supported)")


def _split(member: str, name: str) -> tuple[str, ...]:
    """The path components of a tar name, refusing absolute paths and ``..``."""
    if name.startswith("/"):
        raise HostileLayerError(member, "has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise HostileLayerError(member, "contains '..' and could escape the layer root")
    return parts


class _View:
    """What the filesystem will look like mid-layer: on-disk state overridden by earlier members.

    Used to resolve a member's parent directory without following any symlink on the host.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.declared: dict[tuple[str, ...], str | None] = {}  # symlink target, or None

    def _link_target(self, parts: tuple[str, ...]) -> str | None:
        if parts in self.declared:
            return self.declared[parts]
        path = self.root.joinpath(*parts)
        if path.is_symlink():
            return os.readlink(path)
        return None

    def resolve_dir(self, member: str, parts: tuple[str, ...]) -> tuple[str, ...]:
        """Resolve directory ``parts`` inside the root, or raise if a symlink leads out of it."""
        resolved: list[str] = []
        pending = list(parts)
        hops = 0
        link = ""
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not resolved:
                    raise HostileLayerError(
                        member, f"would be written through symlink {link}, which leaves the root"
                    )
                resolved.pop()
                continue
            resolved.append(part)
            target = self._link_target(tuple(resolved))
            if target is None:
                continue
            hops += 1
            link = f"{'/'.join(resolved)!r} -> {target!r}"
            if hops > _MAX_SYMLINK_HOPS:
                raise HostileLayerError(member, f"passes through a symlink loop at {link}")
            if target.startswith("/"):
                raise HostileLayerError(member, f"would be written through symlink {link}")
            resolved.pop()
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
        return tuple(resolved)


def _validate(members: list[tarfile.TarInfo], root: Path) -> _Plan:
    """Check every member and rewrite its name to a symlink-free path; raise before any write."""
    plan = _Plan()
    view = _View(root)
    for member in members:
        name = member.name
        parts = _split(name, name)
        if not parts:
            continue  # the layer root itself ("./")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise HostileLayerError(name, f"is a {_kind(member)}; layers may not create those")
        parent = view.resolve_dir(name, parts[:-1])
        base = parts[-1]
        if base == OPAQUE_MARKER:
            plan.opaque_dirs.append(parent)
            plan.whiteout_names.append("/".join(parts))
            continue
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                raise HostileLayerError(name, "is a whiteout with no valid name to hide")
            plan.whiteouts.append((*parent, hidden))
            plan.whiteout_names.append("/".join(parts))
            view.declared.setdefault((*parent, hidden), None)
            continue
        changes: dict[str, str] = {"name": "/".join((*parent, base))}
        if member.islnk():
            if member.linkname.startswith("/"):
                raise HostileLayerError(name, f"is a hardlink to absolute path {member.linkname!r}")
            if ".." in member.linkname.split("/"):
                raise HostileLayerError(
                    name, f"is a hardlink to {member.linkname!r}, outside the layer root"
                )
            link_parts = _split(name, member.linkname)
            if not link_parts:
                raise HostileLayerError(name, "is a hardlink to the layer root")
            link_parent = view.resolve_dir(name, link_parts[:-1])
            changes["linkname"] = "/".join((*link_parent, link_parts[-1]))
        view.declared[(*parent, base)] = member.linkname if member.issym() else None
        plan.entries.append(member.replace(**changes, deep=False))  # type: ignore[arg-type]
    return plan


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"special file (tar type {member.type!r})"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _apply_whiteouts(root: Path, plan: _Plan) -> None:
    """Flatten mode: delete what the layer's whiteouts hide in the layers below."""
    for parts in plan.opaque_dirs:
        directory = root.joinpath(*parts)
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
    for parts in plan.whiteouts:
        _remove(root.joinpath(*parts))


def _write_overlay_whiteouts(root: Path, plan: _Plan) -> None:
    """Overlay mode: whiteouts become 0/0 character devices, opaque dirs get the xattr."""
    for parts in plan.whiteouts:
        path = root.joinpath(*parts)
        if os.path.lexists(path):
            continue  # the same layer also adds the path: its entry wins
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    for parts in plan.opaque_dirs:
        directory = root.joinpath(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        os.setxattr(directory, OVERLAY_OPAQUE_XATTR, b"y")


def _extract(tar: tarfile.TarFile, entries: list[tarfile.TarInfo], root: Path) -> None:
    root_real = os.path.realpath(root)

    def place(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        # Names were made symlink-free by _validate; check again against the disk as it is now.
        target = os.path.join(root_real, member.name)
        parent_real = os.path.realpath(os.path.dirname(target))
        if os.path.commonpath([parent_real, root_real]) != root_real:
            raise HostileLayerError(
                member.name, f"would be written outside the root ({parent_real})"
            )
        if os.path.lexists(target) and not (
            member.isdir() and os.path.isdir(target) and not os.path.islink(target)
        ):
            _remove(Path(target))  # an upper layer replaces, never writes through, what is there
        mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID)
        return member.replace(mode=mode, deep=False) if mode != member.mode else member

    tar.extractall(root_real, members=entries, numeric_owner=True, filter=place)


class LayerCache:
    """Unpacked layers, each once, under ``root/layers/<first 32 hex digits of the digest>``.

    The names are short on purpose: each directory becomes one overlayfs ``lowerdir`` and the
    whole mount option string must fit in one page, so 32 hex digits (128 bits) rather than 64
    roughly doubles the number of layers an image may have. The ``<id>.complete`` marker, written
    last, holds the unpack mode and the full digest: a marker for another digest is refused as a
    collision, and one for another mode is redone (a store filled without root and later used as
    root must get overlay whiteouts).

    As root a layer is unpacked in overlay mode (ready to be an overlayfs lower directory).
    Otherwise it is flattened into its own directory, and its whiteouts, which cannot be
    represented without root, are listed in ``<id>.whiteouts.json`` beside it. An interrupted
    unpack is redone on the next call. A per-layer ``flock`` coordinates threads and processes
    (the CLI and an agent) sharing ``root``.
    """

    def __init__(self, root: Path, *, mode: UnpackMode | None = None) -> None:
        self.root = Path(root)
        self._dir = self.root / "layers"
        self.mode: UnpackMode = mode or ("overlay" if os.geteuid() == 0 else "flatten")

    @staticmethod
    def _id(digest: str) -> str:
        return parse_digest(digest)[:32]

    def path(self, digest: str) -> Path:
        return self._dir / self._id(digest)

    def _marker(self, layer_id: str) -> Path:
        return self._dir / f"{layer_id}.complete"

    def whiteouts(self, digest: str) -> list[str]:
        """The whiteout entries recorded for a flattened layer (empty in overlay mode)."""
        sidecar = self._dir / f"{self._id(digest)}.whiteouts.json"
        if not sidecar.is_file():
            return []
        names: list[str] = json.loads(sidecar.read_text())
        return names

    def _state(self, digest: str) -> str | None:
        """The mode the layer is complete in, or None; raise on a truncated-digest collision."""
        try:
            mode, _, recorded = self._marker(self._id(digest)).read_text().partition(" ")
        except FileNotFoundError:
            return None
        if recorded and recorded != digest:
            raise ImageError(
                f"layer directory {self.path(digest)} already holds {recorded}, not {digest}"
            )
        return mode

    def has(self, digest: str) -> bool:
        """Whether the layer is unpacked (in this cache's mode)."""
        return self._state(digest) == self.mode

    def ensure(self, digest: str, blob_path: Path, media_type: str = LAYER_TAR_GZIP) -> Path:
        """Unpack the layer ``blob_path`` (keyed by ``digest``) unless already done; return its dir."""
        layer_id = self._id(digest)
        dest = self._dir / layer_id
        if self._state(digest) == self.mode:
            return dest
        self._dir.mkdir(parents=True, exist_ok=True)
        with flock(self._dir / f".{layer_id}.lock"):
            if self._state(digest) == self.mode:
                return dest  # another thread or process finished it while we waited
            self._marker(layer_id).unlink(missing_ok=True)
            if os.path.lexists(dest):
                _remove(dest)  # left by an interrupted unpack, or unpacked in the other mode
            if self.mode == "overlay":
                unpack_layer(blob_path, dest, media_type=media_type, mode="overlay")
            else:
                tmp = Path(tempfile.mkdtemp(dir=self._dir, prefix=f".{layer_id}.tmp-"))
                try:
                    names = unpack_layer(blob_path, tmp, media_type=media_type, mode="flatten")
                    _write_atomic(self._dir / f"{layer_id}.whiteouts.json", json.dumps(names))
                    tmp.chmod(0o755)
                    os.replace(tmp, dest)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            _write_atomic(self._marker(layer_id), f"{self.mode} {digest}")
            return dest

    def list(self) -> list[str]:
        """Digests of every complete layer (in any mode), sorted."""
        if not self._dir.is_dir():
            return []
        found = []
        for marker in self._dir.glob("*.complete"):
            _, _, digest = marker.read_text().partition(" ")
            if digest:
                found.append(digest)
        return sorted(found)

    def remove(self, digest: str) -> bool:
        """Delete the unpacked layer; return whether it was there. The marker goes first, so a
        concurrent reader never takes a half-deleted directory for a complete one."""
        layer_id = self._id(digest)
        dest = self._dir / layer_id
        with flock(self._dir / f".{layer_id}.lock"):
            existed = self._marker(layer_id).exists() or os.path.lexists(dest)
            self._marker(layer_id).unlink(missing_ok=True)
            if os.path.lexists(dest):
                _remove(dest)
            (self._dir / f"{layer_id}.whiteouts.json").unlink(missing_ok=True)
            (self._dir / f".{layer_id}.lock").unlink(missing_ok=True)  # see flock()
        return existed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

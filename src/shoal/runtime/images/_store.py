"""The local image store: blobs, unpacked layers, and an index of images and tags.

Layout under ``root``::

    blobs/sha256/<hex>     verified content (BlobStore): manifests, configs, layer tarballs
    layers/<id>            unpacked layers (LayerCache), overlayfs lower directories
    index.json             images by manifest digest, and tags -> manifest digest
    index.lock             flock guarding every read-modify-write of index.json
    leases/<pid>-<n>.json  digests an in-flight pull or load is using

``index.json`` is replaced atomically under the lock, so the CLI and an agent in another
process can share one store. Garbage collection (after ``remove``, or to undo a failed pull)
runs under the same lock and spares whatever a live lease names: a pull takes its lease
*before* it checks which blobs are already present, so a blob it decides not to download
cannot be collected under its feet.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal.runtime._procutil import is_running, proc_start_ticks
from shoal.runtime.images._blobs import BlobStore, ImageError
from shoal.runtime.images._errors import ImageNotFoundError, InvalidReferenceError
from shoal.runtime.images._locking import flock
from shoal.runtime.images._model import ImageConfig, ImageRecord, LayerInfo, ResolvedImage
from shoal.runtime.images._reference import parse_reference
from shoal.runtime.images._unpack import LayerCache, UnpackMode

_FULL_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHORT_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
_INDEX_VERSION = 1
_lease_counter = itertools.count()


@dataclass
class StagedImage:
    """An image whose blobs are in the store and layers unpacked, not yet in the index."""

    record: ImageRecord
    media_type: str
    repository: str | None = None
    """``registry/repository`` it came from, so ``name@digest`` finds it later."""
    extra_digests: list[str] = field(default_factory=list)
    """Other digests that name it (the index it was picked from)."""


def _record_from_entry(entry: dict[str, Any], tags: list[str]) -> ImageRecord:
    return ImageRecord(
        id=entry["id"],
        digest=entry["digest"],
        repo_tags=sorted(tags),
        config=ImageConfig(**entry["config"]),
        layers=[LayerInfo(**layer) for layer in entry["layers"]],
        size=entry["size"],
        created=entry.get("created", ""),
        os=entry.get("os", "linux"),
        architecture=entry.get("architecture", ""),
    )


def _tags_by_image(doc: dict[str, Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for tag, target in doc["tags"].items():
        result.setdefault(target["image"], []).append(tag)
    return result


def _overlay_lowerdirs(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """Every directory an overlay mount in this mount namespace uses as a lower layer."""
    dirs: set[str] = set()
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, sep, tail = line.partition(" - ")
        fields = tail.split(" ")
        if not sep or len(fields) < 3 or fields[0] != "overlay":
            continue
        options = _unescape_octal(fields[2])
        for option in re.split(r"(?<!\\),", options):
            key, _, value = option.partition("=")
            if key in ("lowerdir", "lowerdir+", "datadir+"):
                for path in re.split(r"(?<!\\):+", value):
                    if path:
                        dirs.add(os.path.normpath(path.replace("\\:", ":").replace("\\,", ",")))
    return dirs


def _unescape_octal(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


class ImageStore:
    """Images on local disk; synchronous (async callers use ``asyncio.to_thread``)."""

    def __init__(self, root: Path, *, layer_mode: UnpackMode | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.layers = LayerCache(self.root, mode=layer_mode)
        self._index = self.root / "index.json"
        self._lock = self.root / "index.lock"
        self._leases = self.root / "leases"

    # -- the index file ---------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self._index.read_text())
        except FileNotFoundError:
            return {"version": _INDEX_VERSION, "images": {}, "tags": {}}
        except ValueError as exc:
            raise ImageError(f"image index {self._index} is corrupt: {exc}") from exc
        if doc.get("version") != _INDEX_VERSION:
            raise ImageError(
                f"image index {self._index} has version {doc.get('version')!r}; "
                f"this shoal reads version {_INDEX_VERSION}"
            )
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        tmp = self._index.with_name(f".index.json.{os.getpid()}.{threading.get_ident()}")
        with tmp.open("w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._index)

    @contextmanager
    def _snapshot(self) -> Iterator[dict[str, Any]]:
        with flock(self._lock, shared=True):
            yield self._read()

    # -- lookups ----------------------------------------------------------------------------

    def _find(self, doc: dict[str, Any], reference: str) -> str:
        """The manifest digest ``reference`` names (tag, name@digest, id, digest, short id)."""
        images: dict[str, dict[str, Any]] = doc["images"]
        if _FULL_DIGEST_RE.match(reference):
            for key, entry in images.items():
                if reference in (key, entry["id"]) or reference in entry.get("digests", []):
                    return key
            raise ImageNotFoundError(
                f"image {reference} is not in the local store", reference=reference
            )
        parse_error: InvalidReferenceError | None = None
        try:
            parsed = parse_reference(reference)
        except InvalidReferenceError as exc:
            parsed, parse_error = None, exc
        if parsed is not None and parsed.digest is not None:
            for key, entry in images.items():
                if parsed.digest in (key, *entry.get("digests", [])) and parsed.name in entry.get(
                    "repos", []
                ):
                    return key
        elif parsed is not None and parsed.tagged in doc["tags"]:
            return str(doc["tags"][parsed.tagged]["image"])
        if _SHORT_ID_RE.match(reference):
            matches = [k for k, e in images.items() if e["id"][7:].startswith(reference)]
            if len(matches) == 1:
                return matches[0]
        if parse_error is not None:
            raise parse_error
        name = str(parsed) if parsed is not None else reference
        raise ImageNotFoundError(f"image {name} is not in the local store", reference=name)

    def get(self, reference: str) -> ImageRecord:
        """The stored image ``reference`` names; :class:`ImageNotFoundError` if there is none."""
        with self._snapshot() as doc:
            key = self._find(doc, reference)
            return _record_from_entry(doc["images"][key], _tags_by_image(doc).get(key, []))

    def records(self) -> list[ImageRecord]:
        with self._snapshot() as doc:
            tags = _tags_by_image(doc)
            records = [_record_from_entry(e, tags.get(k, [])) for k, e in doc["images"].items()]
        return sorted(records, key=lambda r: (r.repo_tags or ["~"], r.digest))

    def tag_digest(self, tagged: str) -> str | None:
        """The digest the registry reported when ``tagged`` was last pulled, if it still is."""
        with self._snapshot() as doc:
            target = doc["tags"].get(tagged)
            if target is None or target["image"] not in doc["images"]:
                return None
            remote = target.get("remote") or target["image"]
            return str(remote)

    def tag(self, reference: str, tagged: str) -> ImageRecord:
        """Point the tag ``tagged`` (normalised) at the image ``reference`` names, as
        ``docker tag`` does; a tag moved off another image leaves that image in place."""
        parsed = parse_reference(tagged)
        if parsed.digest is not None:
            raise InvalidReferenceError(f'invalid tag "{tagged}": a tag cannot name a digest')
        with flock(self._lock):
            doc = self._read()
            key = self._find(doc, reference)
            entry = doc["images"][key]
            entry["repos"] = sorted({*entry.get("repos", []), parsed.name})
            doc["tags"][parsed.tagged] = {"image": key, "remote": None}
            self._write(doc)
            return _record_from_entry(entry, _tags_by_image(doc).get(key, []))

    def resolve(self, reference: str) -> ResolvedImage:
        """The image with every layer unpacked (re-unpacked from its blob if it went missing)."""
        record = self.get(reference)
        dirs = [
            self.layers.ensure(layer.digest, self.blobs.path(layer.digest), layer.media_type)
            for layer in record.layers
        ]
        return ResolvedImage(record=record, layer_dirs=dirs)

    # -- adding images ----------------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """Protect the digests a pull or load uses from garbage collection until it ends."""
        lease = Lease(self)
        try:
            yield lease
        finally:
            lease.release()

    def commit(
        self, staged: StagedImage, tags: Iterable[str], remote_digest: str | None = None
    ) -> ImageRecord:
        """Record ``staged`` and point ``tags`` at it; a tag moved off another image leaves
        that image in place (untagged), since running containers may still use it."""
        record = staged.record
        with flock(self._lock):
            doc = self._read()
            entry = doc["images"].get(record.digest)
            repos = set(entry.get("repos", [])) if entry else set()
            digests = set(entry.get("digests", [])) if entry else set()
            tags = list(tags)
            if staged.repository:
                repos.add(staged.repository)
            repos.update(tag.rpartition(":")[0] for tag in tags)  # tags are normalised name:tag
            digests.update(staged.extra_digests)
            doc["images"][record.digest] = {
                **{k: v for k, v in asdict(record).items() if k != "repo_tags"},
                "media_type": staged.media_type,
                "repos": sorted(repos),
                "digests": sorted(digests),
            }
            for tag in tags:
                doc["tags"][tag] = {"image": record.digest, "remote": remote_digest}
            self._write(doc)
            key_tags = _tags_by_image(doc).get(record.digest, [])
            return _record_from_entry(doc["images"][record.digest], key_tags)

    # -- removing images --------------------------------------------------------------------

    def _live_lease_digests(self, ignore: Lease | None = None) -> set[str]:
        """Digests named by leases of live processes; stale lease files are deleted."""
        held: set[str] = set()
        if not self._leases.is_dir():
            return held
        for path in self._leases.glob("*.json"):
            if ignore is not None and path == ignore.path:
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being written: its writer holds the lock, so this is a leftover
            if is_running(int(data["pid"]), data.get("start")):
                held.update(data["digests"])
            else:
                path.unlink(missing_ok=True)
        return held

    def _referenced(self, doc: dict[str, Any]) -> set[str]:
        used: set[str] = set()
        for key, entry in doc["images"].items():
            used.add(key)
            used.add(entry["id"])
            used.update(layer["digest"] for layer in entry["layers"])
        return used

    def _collect(
        self, candidates: tuple[Iterable[str], Iterable[str]] | None, ignore: Lease | None
    ) -> list[str]:
        """Delete unreferenced blobs and layer dirs (all, or just ``candidates``); caller holds
        the index lock. Layer dirs still mounted as overlay lower dirs are kept and reported."""
        doc = self._read()
        keep = self._referenced(doc) | self._live_lease_digests(ignore)
        blobs, layers = candidates if candidates else (self.blobs.list(), self.layers.list())
        report: list[str] = []
        mounted = _overlay_lowerdirs()
        for digest in sorted(set(layers) - keep):
            path = self.layers.path(digest)
            if os.path.normpath(path) in mounted:
                report.append(f"kept: layer {digest} ({path} is in use as an overlay lowerdir)")
            elif self.layers.remove(digest):
                report.append(f"deleted: layer {digest}")
        for digest in sorted(set(blobs) - keep):
            if self.blobs.remove(digest):
                report.append(f"deleted: blob {digest}")
        return report

    def discard(self, blobs: Iterable[str], layers: Iterable[str], lease: Lease | None) -> None:
        """Undo a failed pull or load: delete the blobs and layer dirs it brought, unless an
        image or another in-flight pull uses them."""
        with flock(self._lock):
            self._collect((list(blobs), list(layers)), lease)

    def remove(self, reference: str) -> list[str]:
        """Untag ``reference`` (a tag) or delete the image it names (an id or digest, with all
        its tags); delete the image once no tag is left; then collect garbage. Returns one
        line per action: ``untagged: ...``, ``deleted: image ...``, ``deleted: blob ...``,
        ``deleted: layer ...``, ``kept: layer ... (in use as an overlay lowerdir)``."""
        report: list[str] = []
        with flock(self._lock):
            doc = self._read()
            key = self._find(doc, reference)
            tagged = None
            try:
                parsed = parse_reference(reference)
                tagged = parsed.tagged if parsed.digest is None else None
            except InvalidReferenceError:
                pass
            if tagged is not None and doc["tags"].get(tagged, {}).get("image") == key:
                del doc["tags"][tagged]
                report.append(f"untagged: {tagged}")
            else:
                for tag in sorted(_tags_by_image(doc).get(key, [])):
                    del doc["tags"][tag]
                    report.append(f"untagged: {tag}")
            if key not in _tags_by_image(doc):
                entry = doc["images"].pop(key)
                report.append(f"deleted: image {entry['id']} (manifest {key})")
            self._write(doc)
            report.extend(self._collect(None, None))
        return report


class Lease:
    """Digests one pull or load uses; a file under ``leases/`` naming this process."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self.path = store._leases / f"{os.getpid()}-{next(_lease_counter)}.json"
        self.digests: set[str] = set()

    def hold(self, digests: Iterable[str]) -> None:
        """Add ``digests``; do this before checking whether they are already stored."""
        self.digests.update(digests)
        self._store._leases.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        data = {"pid": pid, "start": proc_start_ticks(pid), "digests": sorted(self.digests)}
        with flock(self._store._lock):
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

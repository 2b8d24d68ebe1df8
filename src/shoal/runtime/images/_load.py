"""Importing images from files: an OCI image layout directory, an OCI archive (a tar of such a
layout) or a ``docker save`` tarball (``manifest.json`` with Config/RepoTags/Layers).

Nothing in the file is trusted: every blob is verified against its digest and size as it is
ingested (for ``docker save``, the config against its file name and each layer against the
config's ``rootfs.diff_ids``), every layer is unpacked with the same hostile-layer checks as a
pull, and a failure leaves the store as it was. Archives are read in place, never extracted.

Tags: ``docker save`` names them in ``RepoTags``. In an OCI layout the
``org.opencontainers.image.ref.name`` annotation holds either a full reference or, as skopeo
and umoci write it, just a tag; a bare tag is filed under ``localhost/<file or dir name>``.
``io.containerd.image.name``, when present, wins.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from shoal.runtime.images._blobs import DigestMismatchError, SizeMismatchError, parse_digest
from shoal.runtime.images._errors import ImageLoadError, InvalidReferenceError
from shoal.runtime.images._manifest import (
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    host_platform,
    load_json,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from shoal.runtime.images._model import ImageRecord, LayerInfo
from shoal.runtime.images._reference import parse_reference
from shoal.runtime.images._store import ImageStore, Lease, StagedImage
from shoal.runtime.images._unpack import LAYER_TAR, LAYER_TAR_GZIP, HostileLayerError

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class _Source:
    """Files of a layout directory or archive, by relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if not path.is_dir():
            try:
                self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
                for member in self._tar.getmembers():
                    self._members[_norm(member.name)] = member
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ImageLoadError(
                    f"{path} is neither an OCI layout directory nor a readable tar archive: {exc}"
                ) from exc

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        if self._tar is None:
            return (self.path / name).is_file()
        return _norm(name) in self._members

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._tar is None:
            target = (self.path / name).resolve()
            if not target.is_relative_to(self.path.resolve()):
                raise ImageLoadError(f"{self.path}: entry {name!r} points outside the layout")
            try:
                fh: IO[bytes] = target.open("rb")
            except FileNotFoundError:
                raise ImageLoadError(f"{self.path}: entry {name!r} is missing") from None
            with fh:
                yield fh
            return
        member = self._members.get(_norm(name))
        hops = 0
        while member is not None and member.issym() and hops < 8:
            base = _norm(member.name).rpartition("/")[0]
            member = self._members.get(
                _norm(f"{base}/{member.linkname}" if base else member.linkname)
            )
            hops += 1
        extracted = self._tar.extractfile(member) if member is not None else None
        if extracted is None:
            raise ImageLoadError(f"{self.path}: entry {name!r} is missing or not a regular file")
        with extracted:
            yield extracted

    def read(self, name: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        with self.open(name) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ImageLoadError(f"{self.path}: entry {name!r} is larger than {limit} bytes")
        return data


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{parse_digest(digest)}"


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _verified(data: bytes, desc: Descriptor, what: str) -> bytes:
    actual = _sha256(data)
    if len(data) != desc.size:
        raise SizeMismatchError(
            f"{what}: expected {desc.size} bytes, got {len(data)}",
            expected=str(desc.size),
            actual=str(len(data)),
        )
    if actual != desc.digest:
        raise DigestMismatchError(
            f"{what}: digest mismatch: expected {desc.digest}, got {actual}",
            expected=desc.digest,
            actual=actual,
        )
    return data


def _default_repository(path: Path) -> str | None:
    stem = path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("._-")
    return f"localhost/{stem}" if stem else None


def _tag_for(annotations: dict[str, str], path: Path) -> str | None:
    """The normalised ``name:tag`` an OCI index entry's annotations give, if any."""
    name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    if not name:
        return None
    if "/" not in name and ":" not in name and "@" not in name:
        repository = _default_repository(path)
        if repository is None:
            return None
        name = f"{repository}:{name}"
    try:
        ref = parse_reference(name)
    except InvalidReferenceError as exc:
        raise ImageLoadError(f"{path}: index.json names the image {name!r}: {exc}") from exc
    return ref.tagged if ref.digest is None else None


class _Loader:
    """One ``load`` call: the blobs and layers it brought, to undo on failure."""

    def __init__(self, store: ImageStore, source: _Source, lease: Lease) -> None:
        self.store = store
        self.source = source
        self.lease = lease
        self.brought_blobs: set[str] = set()
        self.brought_layers: set[str] = set()

    def ingest(self, name: str, digest: str, size: int | None) -> None:
        """Stream entry ``name`` into the store under ``digest`` (verified)."""
        if self.store.blobs.has(digest):
            return
        with self.source.open(name) as fh:
            try:
                self.store.blobs.ingest(fh, digest, size)
            except DigestMismatchError as exc:
                raise type(exc)(
                    f"{self.source.path}: entry {name!r}: {exc}",
                    expected=exc.expected,
                    actual=exc.actual,
                ) from exc
        self.brought_blobs.add(digest)

    def unpack(self, layers: list[LayerInfo]) -> None:
        for layer in layers:
            if not self.store.layers.has(layer.digest):
                self.brought_layers.add(layer.digest)
                blob = self.store.blobs.path(layer.digest)
                try:
                    self.store.layers.ensure(layer.digest, blob, layer.media_type)
                except HostileLayerError as exc:
                    context = f"loading {self.source.path}: layer {layer.digest}"
                    raise HostileLayerError(exc.member, exc.reason, context=context) from exc

    def stage(
        self, manifest_digest: str, media_type: str, config_digest: str, config_bytes: bytes,
        layers: list[LayerInfo], extra: list[str],
    ) -> StagedImage:  # fmt: skip
        parsed = parse_config(config_bytes, f"{self.source.path}: config {config_digest}")
        if parsed.diff_ids and len(parsed.diff_ids) != len(layers):
            raise ImageLoadError(
                f"{self.source.path}: config {config_digest} lists {len(parsed.diff_ids)} layers "
                f"but the manifest has {len(layers)}"
            )
        self.unpack(layers)
        record = ImageRecord(
            id=config_digest,
            digest=manifest_digest,
            repo_tags=[],
            config=parsed.config,
            layers=layers,
            size=len(config_bytes) + sum(layer.size for layer in layers),
            created=parsed.created,
            os=parsed.os or "linux",
            architecture=parsed.architecture,
        )
        return StagedImage(record, media_type, None, extra)

    # -- OCI layout ---------------------------------------------------------------------------

    def oci(self) -> list[tuple[StagedImage, list[str]]]:
        path = self.source.path
        layout = load_json(self.source.read("oci-layout"), f"{path}: oci-layout")
        if not str(layout.get("imageLayoutVersion", "")).startswith("1."):
            raise ImageLoadError(
                f"{path}: oci-layout imageLayoutVersion {layout.get('imageLayoutVersion')!r} "
                "is not supported (expected 1.x)"
            )
        index = load_json(self.source.read("index.json"), f"{path}: index.json")
        entries = parse_index(index, f"{path}: index.json")
        if not entries:
            raise ImageLoadError(f"{path}: index.json lists no images")
        found: dict[str, tuple[StagedImage, list[str]]] = {}
        for i, desc in enumerate(entries):
            what = f"{path}: index.json manifests[{i}]"
            tag = _tag_for(desc.annotations, path)
            staged = self._oci_image(desc, what)
            _, tags = found.setdefault(staged.record.digest, (staged, []))
            if tag and tag not in tags:
                tags.append(tag)
        return list(found.values())

    def _oci_image(self, desc: Descriptor, what: str) -> StagedImage:
        body = _verified(self.source.read(_blob_name(desc.digest)), desc, what)
        doc = load_json(body, what)
        extra: list[str] = []
        if (desc.media_type or media_type_of(doc)) in INDEX_TYPES:
            chosen = select_platform(parse_index(doc, what), host_platform(), what)
            extra = [desc.digest]
            desc, what = chosen, f"{what} -> {chosen.digest}"
            body = _verified(self.source.read(_blob_name(desc.digest)), desc, what)
            doc = load_json(body, what)
        manifest = parse_manifest(doc, what)
        digests = [desc.digest, manifest.config.digest, *(d.digest for d in manifest.layers)]
        self.lease.hold(digests)
        config = manifest.config
        config_bytes = _verified(
            self.source.read(_blob_name(config.digest)), config, f"{what}: config"
        )
        for layer in manifest.layers:
            self.ingest(_blob_name(layer.digest), layer.digest, layer.size)
        if not self.store.blobs.has(config.digest):
            self.store.blobs.ingest_bytes(config_bytes, config.digest)
            self.brought_blobs.add(config.digest)
        if not self.store.blobs.has(desc.digest):
            self.store.blobs.ingest_bytes(body, desc.digest)
            self.brought_blobs.add(desc.digest)
        layers = [LayerInfo(d.digest, d.media_type, d.size) for d in manifest.layers]
        return self.stage(
            desc.digest, manifest.media_type, config.digest, config_bytes, layers, extra
        )

    # -- docker save --------------------------------------------------------------------------

    def docker(self) -> list[tuple[StagedImage, list[str]]]:
        path = self.source.path
        try:
            entries = json.loads(self.source.read("manifest.json"))
        except ValueError as exc:
            raise ImageLoadError(f"{path}: manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not entries:
            raise ImageLoadError(f"{path}: manifest.json must be a non-empty list of images")
        return [self._docker_image(e, f"{path}: manifest.json[{i}]") for i, e in enumerate(entries)]

    def _docker_image(self, entry: Any, what: str) -> tuple[StagedImage, list[str]]:
        if not isinstance(entry, dict):
            raise ImageLoadError(f"{what} must be an object")
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        repo_tags = entry.get("RepoTags") or []
        if not isinstance(config_name, str):
            raise ImageLoadError(f"{what}: field 'Config' must be a file name")
        if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise ImageLoadError(f"{what}: field 'Layers' must be a list of file names")
        if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            raise ImageLoadError(f"{what}: field 'RepoTags' must be a list of strings")
        config_bytes = self.source.read(config_name, 16 << 20)
        config_digest = _sha256(config_bytes)
        named = re.search(r"([0-9a-f]{64})(?:\.json)?$", config_name)
        if named and f"sha256:{named.group(1)}" != config_digest:
            raise DigestMismatchError(
                f"{what}: config {config_name!r} has digest {config_digest}",
                expected=f"sha256:{named.group(1)}",
                actual=config_digest,
            )
        diff_ids = parse_config(config_bytes, f"{what}: config").diff_ids
        if len(diff_ids) != len(layer_names):
            raise ImageLoadError(
                f"{what}: config lists {len(diff_ids)} layers but 'Layers' has {len(layer_names)}"
            )
        self.lease.hold([config_digest, *diff_ids])
        layers = [
            self._docker_layer(name, diff_id, f"{what}: layer {name!r}")
            for name, diff_id in zip(layer_names, diff_ids, strict=True)
        ]
        if not self.store.blobs.has(config_digest):
            self.store.blobs.ingest_bytes(config_bytes, config_digest)
            self.brought_blobs.add(config_digest)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size} for x in layers],
        }  # fmt: skip
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_digest = _sha256(body)
        self.lease.hold([manifest_digest])
        if not self.store.blobs.has(manifest_digest):
            self.store.blobs.ingest_bytes(body, manifest_digest)
            self.brought_blobs.add(manifest_digest)
        tags = []
        for tag in repo_tags:
            try:
                tags.append(str(parse_reference(tag).tagged))
            except InvalidReferenceError as exc:
                raise ImageLoadError(f"{what}: RepoTags entry {tag!r}: {exc}") from exc
        staged = self.stage(manifest_digest, OCI_MANIFEST, config_digest, config_bytes, layers, [])
        return staged, tags

    def _docker_layer(self, name: str, diff_id: str, what: str) -> LayerInfo:
        """Ingest one layer file, checking it against the config's diff id (the digest of the
        uncompressed tar, whether or not the file is gzipped)."""
        parse_digest(diff_id)
        with self.source.open(name) as fh:
            gzipped = fh.read(2) == _GZIP_MAGIC
        if not gzipped:
            self.ingest(name, diff_id, None)
            size = self.store.blobs.path(diff_id).stat().st_size
            return LayerInfo(diff_id, LAYER_TAR, size)
        outer, inner = hashlib.sha256(), hashlib.sha256()
        with self.source.open(name) as fh:
            try:
                _gunzip_hashes(fh, outer, inner)
            except zlib.error as exc:
                raise ImageLoadError(f"{what} is not a readable gzip stream: {exc}") from exc
        if f"sha256:{inner.hexdigest()}" != diff_id:
            raise DigestMismatchError(
                f"{what}: uncompressed digest sha256:{inner.hexdigest()} is not the config's "
                f"diff id {diff_id}",
                expected=diff_id,
                actual=f"sha256:{inner.hexdigest()}",
            )
        digest = f"sha256:{outer.hexdigest()}"
        self.lease.hold([digest])
        self.ingest(name, digest, None)
        size = self.store.blobs.path(digest).stat().st_size
        return LayerInfo(digest, LAYER_TAR_GZIP, size)


def _gunzip_hashes(fh: IO[bytes], outer: Any, inner: Any) -> None:
    """Hash a (possibly multi-member) gzip stream as stored (``outer``) and uncompressed."""
    unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    while chunk := fh.read(_CHUNK):
        outer.update(chunk)
        while chunk:
            inner.update(unzip.decompress(chunk))
            chunk = b""
            if unzip.eof:
                chunk, unzip = unzip.unused_data, zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    inner.update(unzip.flush())


def load_images(store: ImageStore, path: Path) -> list[ImageRecord]:
    """Import every image in ``path`` (see the module docstring); return the stored records."""
    if not path.exists():
        raise ImageLoadError(f"{path} does not exist")
    source = _Source(path)
    try:
        with store.lease() as lease:
            loader = _Loader(store, source, lease)
            try:
                if source.exists("manifest.json"):
                    staged = loader.docker()
                elif source.exists("index.json") and source.exists("oci-layout"):
                    staged = loader.oci()
                else:
                    raise ImageLoadError(
                        f"{path} is not an OCI layout (oci-layout + index.json), an OCI archive "
                        "or a docker save tarball (manifest.json)"
                    )
                return [store.commit(image, tags) for image, tags in staged]
            except BaseException:
                store.discard(loader.brought_blobs, loader.brought_layers, lease)
                raise
    finally:
        source.close()

"""BlobStore: verified ingest, dedup, and nothing stored on a mismatch."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

import shoal.runtime.images as images
from shoal.runtime.images import (
    BlobNotFoundError,
    BlobStore,
    DigestMismatchError,
    InvalidDigestError,
    SizeMismatchError,
)

DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_all_is_pinned() -> None:
    assert sorted(images.__all__) == sorted(
        [
            "DOCKER_LAYER_TAR_GZIP",
            "LAYER_TAR",
            "LAYER_TAR_GZIP",
            "BlobNotFoundError",
            "BlobStore",
            "CorruptLayerError",
            "DigestMismatchError",
            "HostileLayerError",
            "ImageConfig",
            "ImageError",
            "ImageLoadError",
            "ImageNotFoundError",
            "ImageProvider",
            "ImagePullError",
            "ImageRecord",
            "ImageService",
            "InvalidDigestError",
            "InvalidReferenceError",
            "LayerCache",
            "LayerInfo",
            "PullPolicy",
            "PullProgress",
            "ResolvedImage",
            "SizeMismatchError",
            "UnpackMode",
            "UnsupportedLayerError",
            "normalize_reference",
            "parse_digest",
            "unpack_layer",
        ]
    )
    for name in images.__all__:
        assert hasattr(images, name)
    for error in ("ImageLoadError", "ImageNotFoundError", "ImagePullError", "InvalidReferenceError",
                  "DigestMismatchError", "HostileLayerError"):  # fmt: skip
        assert issubclass(getattr(images, error), images.ImageError)


def test_writer_refuses_an_overrun_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(DIGEST, 4)
    writer.write(DATA[:4])
    with pytest.raises(SizeMismatchError, match="more than"):
        writer.write(DATA[4:5])
    writer.abort()
    assert _leftovers(tmp_path) == []
    writer = store.writer(DIGEST, len(DATA))
    for i in range(0, len(DATA), 3):
        writer.write(DATA[i : i + 3])
    assert writer.commit() == store.path(DIGEST)
    writer.abort()  # no-op after commit
    assert store.has(DIGEST)


def test_ingest_stream_stores_verified_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    path = store.ingest(io.BytesIO(DATA), DIGEST, len(DATA))
    assert path == tmp_path / "blobs" / "sha256" / DIGEST.removeprefix("sha256:")
    assert path.read_bytes() == DATA
    assert store.has(DIGEST)
    assert store.list() == [DIGEST]
    with store.open(DIGEST) as fh:
        assert fh.read() == DATA
    assert list((tmp_path / "ingest").iterdir()) == []


def test_ingest_iterable_of_chunks(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    chunks = [DATA[:10], DATA[10:5000], DATA[5000:]]
    assert store.ingest(chunks, DIGEST, None).read_bytes() == DATA


def test_second_ingest_does_not_rewrite(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    path = store.ingest_bytes(DATA, DIGEST)
    before = path.stat()
    consumed: list[bytes] = []

    def stream() -> list[bytes]:
        consumed.append(b"x")
        return [DATA]

    again = store.ingest(stream(), DIGEST, len(DATA))
    after = again.stat()
    assert again == path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError) as info:
        store.ingest(io.BytesIO(DATA), wrong, len(DATA))
    assert wrong in str(info.value)
    assert DIGEST in str(info.value)
    assert info.value.actual == DIGEST
    assert _leftovers(tmp_path) == []
    assert not store.has(wrong)
    assert store.list() == []


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1])
def test_size_mismatch_stores_nothing(tmp_path: Path, size: int) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(SizeMismatchError) as info:
        store.ingest(io.BytesIO(DATA), DIGEST, size)
    assert str(size) in str(info.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "digest",
    ["", "sha256:abc", "sha512:" + "0" * 64, "sha256:" + "G" * 64, "sha256:" + "A" * 64, "0" * 64],
)
def test_bad_digest_format(tmp_path: Path, digest: str) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(InvalidDigestError, match="invalid digest"):
        store.ingest_bytes(DATA, digest)
    with pytest.raises(InvalidDigestError):
        store.path(digest)
    assert _leftovers(tmp_path) == []


def test_remove_and_missing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.ingest_bytes(DATA, DIGEST)
    assert store.remove(DIGEST) is True
    assert store.remove(DIGEST) is False
    assert not store.has(DIGEST)
    with pytest.raises(BlobNotFoundError):
        store.open(DIGEST)

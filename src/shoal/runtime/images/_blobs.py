"""A content-addressed blob store: ``root/blobs/sha256/<hex>``, each blob verified before it lands.

Blobs (layers, configs, manifests) are written to a temporary file under ``root/ingest/`` while
being hashed, and only moved into place with ``os.replace`` once both digest and size match. A
reader therefore never sees a partial or unverified blob, and a blob shared by many images is
stored once. I/O is synchronous; async callers run these methods in a thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from shoal.errors import ShoalError

_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_CHUNK = 1 << 20


class ImageError(ShoalError):
    """Base of the image store's errors."""


class InvalidDigestError(ImageError):
    """A digest string is not ``sha256:<64 lowercase hex>``; fix the manifest or the caller."""


class DigestMismatchError(ImageError):
    """Downloaded content does not match its digest. Nothing was stored; fetch it again.

    ``expected`` and ``actual`` are digests (or sizes, for :class:`SizeMismatchError`).
    """

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SizeMismatchError(DigestMismatchError):
    """Downloaded content has a different length from the descriptor's ``size``. Nothing stored."""


class BlobNotFoundError(ImageError):
    """The blob is not in the store; ingest it first."""


def parse_digest(digest: str) -> str:
    """Return the hex part of ``sha256:<hex>``, or raise :class:`InvalidDigestError`."""
    match = _DIGEST_RE.match(digest)
    if match is None:
        raise InvalidDigestError(f"invalid digest {digest!r}: expected 'sha256:' and 64 hex digits")
    return match.group(1)


def _chunks(stream: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(stream, io.IOBase) or hasattr(stream, "read"):
        reader: BinaryIO = stream  # type: ignore[assignment]
        while chunk := reader.read(_CHUNK):
            yield chunk
    else:
        yield from stream


class BlobStore:
    """Verified, content-addressed blobs under ``root``.

    ``root`` is typically ``<data dir>/images``; ``root/blobs/sha256`` and ``root/ingest`` are
    created on demand.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._ingest = self.root / "ingest"

    def path(self, digest: str) -> Path:
        """Where the blob lives (or would live); does not check that it exists."""
        return self._blobs / parse_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for reading; raise :class:`BlobNotFoundError` if it is absent."""
        path = self.path(digest)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"blob {digest} is not in the store") from exc

    def writer(self, expected_digest: str, expected_size: int | None = None) -> BlobWriter:
        """A :class:`BlobWriter` to feed chunk by chunk (e.g. from a network stream)."""
        return BlobWriter(self, expected_digest, expected_size)

    def ingest(
        self,
        stream: BinaryIO | Iterable[bytes],
        expected_digest: str,
        expected_size: int | None = None,
    ) -> Path:
        """Store ``stream``'s content under ``expected_digest`` and return its path.

        The content is hashed as it is written to a temporary file; on a digest or size mismatch
        the temporary file is removed and :class:`DigestMismatchError` (or its subclass
        :class:`SizeMismatchError`) is raised, so nothing reaches the store. If the blob is already
        present the stream is not read and nothing is rewritten.
        """
        final = self.path(expected_digest)
        if final.is_file():
            return final
        writer = self.writer(expected_digest, expected_size)
        try:
            for chunk in _chunks(stream):
                writer.write(chunk)
            return writer.commit()
        finally:
            writer.abort()

    def ingest_bytes(self, data: bytes, expected_digest: str) -> Path:
        """:meth:`ingest` for content already in memory (manifests, configs)."""
        return self.ingest([data], expected_digest, len(data))

    def remove(self, digest: str) -> bool:
        """Delete the blob; return whether it was there."""
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> list[str]:
        """Digests of every stored blob, sorted."""
        if not self._blobs.is_dir():
            return []
        return sorted(
            f"sha256:{entry.name}"
            for entry in self._blobs.iterdir()
            if _DIGEST_RE.match(f"sha256:{entry.name}") and entry.is_file()
        )


class BlobWriter:
    """One blob being ingested: ``write`` chunks, then ``commit`` (verify + move) or ``abort``.

    The content goes to a temporary file under ``ingest/`` while being hashed; ``commit``
    checks size and digest and only then renames it into ``blobs/``. ``abort`` after
    ``commit`` is a no-op, so ``try: ... commit() finally: abort()`` is the usual shape.
    A size overrun is refused as soon as it happens, so a lying server cannot fill the disk.
    """

    def __init__(self, store: BlobStore, expected_digest: str, expected_size: int | None) -> None:
        self._hex = parse_digest(expected_digest)
        self.digest = expected_digest
        self.expected_size = expected_size
        self.final = store.path(expected_digest)
        self._blobs_dir = self.final.parent
        self._blobs_dir.mkdir(parents=True, exist_ok=True)
        store.root.joinpath("ingest").mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=store.root / "ingest", prefix=f"{self._hex[:12]}-")
        self.tmp = Path(name)
        self._out: BinaryIO | None = os.fdopen(fd, "wb", buffering=_CHUNK)
        self._hasher = hashlib.sha256()
        self.written = 0

    def write(self, chunk: bytes) -> None:
        if self._out is None:
            raise ValueError(f"blob {self.digest}: write after commit or abort")
        self.written += len(chunk)
        if self.expected_size is not None and self.written > self.expected_size:
            raise SizeMismatchError(
                f"blob {self.digest}: expected {self.expected_size} bytes, got more than that",
                expected=str(self.expected_size),
                actual=f">{self.expected_size}",
            )
        self._hasher.update(chunk)
        self._out.write(chunk)

    def commit(self) -> Path:
        """Verify size and digest, then move the blob into place; return its path."""
        if self._out is None:
            raise ValueError(f"blob {self.digest}: commit after commit or abort")
        out, self._out = self._out, None
        try:
            out.flush()
            os.fsync(out.fileno())
        finally:
            out.close()
        if self.expected_size is not None and self.written != self.expected_size:
            raise SizeMismatchError(
                f"blob {self.digest}: expected {self.expected_size} bytes, got {self.written}",
                expected=str(self.expected_size),
                actual=str(self.written),
            )
        actual = f"sha256:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(
                f"digest mismatch: expected {self.digest}, got {actual}",
                expected=self.digest,
                actual=actual,
            )
        self.tmp.chmod(0o444)
        os.replace(self.tmp, self.final)
        _fsync_dir(self._blobs_dir)
        return self.final

    def abort(self) -> None:
        """Drop the temporary file (no-op once committed)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

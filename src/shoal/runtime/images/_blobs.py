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
        hex_digest = parse_digest(expected_digest)
        final = self._blobs / hex_digest
        if final.is_file():
            return final
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._ingest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._ingest, prefix=f"{hex_digest[:12]}-")
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(stream):
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise SizeMismatchError(
                            f"blob {expected_digest}: expected {expected_size} bytes, "
                            f"got more than that",
                            expected=str(expected_size),
                            actual=f">{expected_size}",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected_size is not None and size != expected_size:
                raise SizeMismatchError(
                    f"blob {expected_digest}: expected {expected_size} bytes, got {size}",
                    expected=str(expected_size),
                    actual=str(size),
                )
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != expected_digest:
                raise DigestMismatchError(
                    f"digest mismatch: expected {expected_digest}, got {actual}",
                    expected=expected_digest,
                    actual=actual,
                )
            tmp.chmod(0o444)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self._blobs)
        return final

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The image service's own errors, beside the store-level ones in ``_blobs`` and ``_unpack``.

::

    ImageError                      (shoal.errors.ShoalError)
     ├── InvalidDigestError         a digest string is malformed
     ├── DigestMismatchError        content does not match its digest; nothing was stored
     │    └── SizeMismatchError     ... or its declared size
     ├── BlobNotFoundError          a blob is missing from the local store
     ├── HostileLayerError          a layer tries to escape its root; nothing was written
     ├── CorruptLayerError          a layer is not a readable tarball
     ├── UnsupportedLayerError      zstd, unknown media types, whiteouts without root
     ├── InvalidReferenceError      "Busybox", "a:b:c", "x@sha256:short"
     ├── ImageNotFoundError         not in the local store (pull it, or fix the name)
     ├── ImagePullError             the registry or the network said no
     └── ImageLoadError             a file given to ``load`` is not a usable image archive
"""

from __future__ import annotations

from shoal.runtime.images._blobs import ImageError


class InvalidReferenceError(ImageError):
    """An image reference does not parse; the message names it and says which part is wrong."""


class ImageNotFoundError(ImageError):
    """The image is not in the local store. Pull it first (or fix the reference)."""

    def __init__(self, message: str, *, reference: str) -> None:
        super().__init__(message)
        self.reference = reference


class ImagePullError(ImageError):
    """A registry refused the pull or could not be reached.

    The message carries the registry's own error text (``manifest unknown: manifest unknown``)
    or the transport failure (``connection refused``) and names the reference and host. Check
    the name, the credentials in the auth file, or that the registry is up; then retry.
    """

    def __init__(self, message: str, *, reference: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reference = reference
        self.status = status


class ImageLoadError(ImageError):
    """A file given to ``ImageService.load`` is not an OCI layout, OCI archive or docker-save
    tarball, or contradicts itself; the message names the file and the entry at fault."""

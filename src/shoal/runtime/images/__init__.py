"""OCI image storage: verified content-addressed blobs and safely unpacked layers.

Synchronous I/O throughout; async callers run these in a thread (``asyncio.to_thread``).
"""

from shoal.runtime.images._blobs import (
    BlobNotFoundError,
    BlobStore,
    DigestMismatchError,
    ImageError,
    InvalidDigestError,
    SizeMismatchError,
    parse_digest,
)
from shoal.runtime.images._unpack import (
    DOCKER_LAYER_TAR_GZIP,
    LAYER_TAR,
    LAYER_TAR_GZIP,
    CorruptLayerError,
    HostileLayerError,
    LayerCache,
    UnpackMode,
    UnsupportedLayerError,
    unpack_layer,
)

__all__ = [
    "DOCKER_LAYER_TAR_GZIP",
    "LAYER_TAR",
    "LAYER_TAR_GZIP",
    "BlobNotFoundError",
    "BlobStore",
    "CorruptLayerError",
    "DigestMismatchError",
    "HostileLayerError",
    "ImageError",
    "InvalidDigestError",
    "LayerCache",
    "SizeMismatchError",
    "UnpackMode",
    "UnsupportedLayerError",
    "parse_digest",
    "unpack_layer",
]

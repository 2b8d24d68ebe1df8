"""OCI images: pull from registries, load from files, store, and unpack for containers.

Everyday use goes through :class:`ImageService` (``pull``/``ensure``/``load``/``list``/
``remove``, and ``resolve`` for the runc driver, which only ever sees an
:class:`ImageProvider`). Underneath: a registry v2 client, a verified content-addressed
:class:`BlobStore`, a :class:`LayerCache` of safely unpacked layers and a JSON index shared by
processes under an ``flock``. The error tree is drawn in ``_errors.py``.
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
from shoal.runtime.images._errors import (
    ImageLoadError,
    ImageNotFoundError,
    ImagePullError,
    InvalidReferenceError,
)
from shoal.runtime.images._model import (
    ImageConfig,
    ImageProvider,
    ImageRecord,
    LayerInfo,
    ResolvedImage,
)
from shoal.runtime.images._reference import normalize_reference
from shoal.runtime.images._service import ImageService, PullPolicy, PullProgress
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

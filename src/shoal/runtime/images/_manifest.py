"""Parsing manifests, indexes and image configs (pure: bytes in, typed values out).

Both families of media types are accepted: OCI (image index, image manifest) and Docker's
(manifest list, schema 2 manifest). An index is resolved to one platform, the host's by
default: ``linux`` plus the Go architecture name of ``platform.machine()`` and, on ARM, its
variant. Every malformed field raises :class:`ImageError` naming the field and the document.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from shoal.runtime.images._blobs import ImageError, parse_digest
from shoal.runtime.images._model import ImageConfig
from shoal.runtime.images._unpack import DOCKER_LAYER_TAR_GZIP, LAYER_TAR, LAYER_TAR_GZIP

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset({LAYER_TAR, LAYER_TAR_GZIP, DOCKER_LAYER_TAR_GZIP, DOCKER_LAYER_TAR})
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

MAX_MANIFEST_BYTES = 4 << 20
"""Manifests and configs are read into memory; anything larger is refused (as containerd does)."""

_GOARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "loongarch64": ("loong64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def host_platform(machine: str | None = None) -> Platform:
    """The platform images are resolved to here: linux + GOARCH (+ variant on ARM)."""
    raw = (machine or _platform.machine()).lower()
    arch, variant = _GOARCH.get(raw, (raw, ""))
    return Platform("linux", arch, variant)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and its layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True)
class ParsedConfig:
    config: ImageConfig
    os: str
    architecture: str
    variant: str
    created: str
    diff_ids: list[str]


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object, or raise :class:`ImageError` naming ``what``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImageError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _str(doc: dict[str, Any], key: str, what: str, *, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ImageError(f"{what}: field {key!r} must be a string, got {value!r}")
    return value


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ImageError(f"{what} must be an object, got {raw!r}")
    digest = _str(raw, "digest", what)
    parse_digest(digest)
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what}: field 'size' must be a non-negative integer, got {size!r}")
    plat = None
    if isinstance(raw.get("platform"), dict):
        p = raw["platform"]
        plat = Platform(
            _str(p, "os", f"{what}.platform", required=False),
            _str(p, "architecture", f"{what}.platform", required=False),
            _str(p, "variant", f"{what}.platform", required=False),
        )
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ImageError(f"{what}: field 'annotations' must map strings to strings")
    return Descriptor(_str(raw, "mediaType", what, required=False), digest, size, plat, annotations)


def media_type_of(doc: dict[str, Any]) -> str:
    """The document's media type; OCI allows it to be absent, so infer it from the shape."""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return ""


def parse_index(doc: dict[str, Any], what: str) -> list[Descriptor]:
    """The manifest descriptors of an OCI index or Docker manifest list."""
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ImageError(f"{what}: field 'manifests' must be a list")
    return [_descriptor(m, f"{what}: manifests[{i}]") for i, m in enumerate(manifests)]


def parse_manifest(doc: dict[str, Any], what: str) -> Manifest:
    """An OCI or Docker schema 2 image manifest; refuses layer types that cannot be unpacked."""
    media_type = media_type_of(doc)
    if media_type not in MANIFEST_TYPES:
        raise ImageError(f"{what}: unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise ImageError(f"{what}: schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
    config = _descriptor(doc.get("config"), f"{what}: config")
    if config.media_type and config.media_type not in CONFIG_TYPES:
        raise ImageError(f"{what}: config media type {config.media_type!r} is not an image config")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise ImageError(f"{what}: field 'layers' must be a list")
    layers = [_descriptor(layer, f"{what}: layers[{i}]") for i, layer in enumerate(raw_layers)]
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            hint = " (zstd is not supported yet)" if "zstd" in layer.media_type else ""
            raise ImageError(
                f"{what}: layers[{i}] has unsupported media type {layer.media_type!r}{hint}"
            )
    return Manifest(media_type, config, layers)


def select_platform(
    manifests: list[Descriptor], want: Platform, what: str = "image index"
) -> Descriptor:
    """Pick the manifest for ``want`` from an index, as containerd's default matcher does.

    OS and architecture must match. An entry with the wanted variant comes first, then one
    without a variant (arm64 images rarely say ``v8``); a host without a variant takes any
    variant last. Entries for ``unknown`` platforms (attestations) never match.
    """
    candidates = [
        m
        for m in manifests
        if (m.media_type in MANIFEST_TYPES or not m.media_type)
        and m.platform is not None
        and m.platform.os == want.os
        and m.platform.architecture == want.architecture
    ]
    exact = [m for m in candidates if m.platform and m.platform.variant == want.variant]
    if exact:
        return exact[0]
    lenient = [m for m in candidates if m.platform and not m.platform.variant]
    if lenient:
        return lenient[0]
    if not want.variant and candidates:
        return candidates[0]
    if len(manifests) == 1 and manifests[0].platform is None:
        return manifests[0]
    offered = ", ".join(sorted({str(m.platform) for m in manifests if m.platform})) or "none"
    raise ImageError(f"{what} has no manifest for {want} (it offers: {offered})")


def _str_list(raw: Any, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ImageError(f"{what} must be a list of strings, got {raw!r}")
    return list(raw)


def parse_config(data: bytes, what: str) -> ParsedConfig:
    """The runtime settings, platform and layer diff ids from an image config blob."""
    doc = load_json(data, what)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ImageError(f"{what}: field 'config' must be an object")
    ports = cfg.get("ExposedPorts") or {}
    labels = cfg.get("Labels") or {}
    if not isinstance(ports, dict):
        raise ImageError(f"{what}: field 'config.ExposedPorts' must be an object")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ImageError(f"{what}: field 'config.Labels' must map strings to strings")
    rootfs = doc.get("rootfs") or {}
    if not isinstance(rootfs, dict):
        raise ImageError(f"{what}: field 'rootfs' must be an object")
    image_config = ImageConfig(
        entrypoint=_str_list(cfg.get("Entrypoint"), f"{what}: field 'config.Entrypoint'"),
        cmd=_str_list(cfg.get("Cmd"), f"{what}: field 'config.Cmd'"),
        env=_str_list(cfg.get("Env"), f"{what}: field 'config.Env'"),
        working_dir=_str(cfg, "WorkingDir", f"{what}: config", required=False),
        user=_str(cfg, "User", f"{what}: config", required=False),
        exposed_ports=sorted(str(p) for p in ports),
        labels={str(k): v for k, v in labels.items()},
        stop_signal=_str(cfg, "StopSignal", f"{what}: config", required=False),
    )
    return ParsedConfig(
        config=image_config,
        os=_str(doc, "os", what, required=False),
        architecture=_str(doc, "architecture", what, required=False),
        variant=_str(doc, "variant", what, required=False),
        created=_str(doc, "created", what, required=False),
        diff_ids=_str_list(rootfs.get("diff_ids"), f"{what}: field 'rootfs.diff_ids'"),
    )

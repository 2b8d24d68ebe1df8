"""What the rest of shoal sees of a stored image: its identity, config and layers.

The image service (``ImageService``) produces these; the runc driver consumes a
``ResolvedImage`` (config + unpacked layer directories, bottom first) through the
``ImageProvider`` protocol, so the driver never touches registries or blobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config (``config`` in the config blob)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    """``KEY=VALUE`` strings, in the image's order."""
    working_dir: str = ""
    user: str = ""
    """``uid``, ``uid:gid``, ``name`` or ``name:group`` as in the image config; "" is root."""
    exposed_ports: list[str] = field(default_factory=list)
    """``"8080/tcp"`` style keys."""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""


@dataclass(frozen=True)
class LayerInfo:
    digest: str
    """Digest of the compressed blob as named by the manifest."""
    media_type: str
    size: int


@dataclass(frozen=True)
class ImageRecord:
    """One stored image."""

    id: str
    """Digest of the config blob (``sha256:...``), as Docker's image id."""
    digest: str
    """Digest of the manifest that was pulled or loaded (``sha256:...``)."""
    repo_tags: list[str]
    """Normalised references pointing at it, e.g. ``127.0.0.1:5000/busybox:1``."""
    config: ImageConfig
    layers: list[LayerInfo]
    size: int
    """Sum of the compressed layer sizes plus the config."""
    created: str = ""
    """RFC 3339 creation time from the image config, when present."""
    os: str = "linux"
    architecture: str = ""


@dataclass(frozen=True)
class ResolvedImage:
    """An image ready to be used as a container root: its layers unpacked on disk."""

    record: ImageRecord
    layer_dirs: list[Path]
    """Unpacked layer directories, bottom (base) layer first; overlayfs lowerdirs."""


class ImageProvider(Protocol):
    """How a runtime driver gets a local image. Never pulls: the agent pulls first."""

    def resolve(self, reference: str) -> ResolvedImage:
        """The image named by ``reference`` (name[:tag], name@digest or an image id), with
        every layer unpacked. Raises ImageError (e.g. ImageNotFoundError) when absent."""
        ...

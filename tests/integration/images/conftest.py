"""Shared fixtures: one busybox OCI layout (tags ``1``: one layer; ``3``: that layer plus two)
built once per session with umoci, and one anonymous docker-registry holding both."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shoal.runtime.images import ImageService
from tests.oci_support import TOOLS, Registry, build_busybox_image, push, registry
from tests.rootreq import require_root


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root(*TOOLS)
    work = tmp_path_factory.mktemp("busybox-image")
    layout = build_busybox_image(work, layers=1, tag="1")
    build_busybox_image(work, layers=2, tag="3", base="1")
    return layout


@pytest.fixture
def layout_copy(busybox_layout: Path, tmp_path: Path) -> Path:
    """A private copy of the layout, for tests that add tags or tamper with blobs."""
    copy = tmp_path / "layout"
    shutil.copytree(busybox_layout, copy)
    return copy


@pytest.fixture(scope="session")
def shared_registry(
    tmp_path_factory: pytest.TempPathFactory, busybox_layout: Path
) -> Iterator[Registry]:
    require_root(*TOOLS)
    with registry(tmp_path_factory.mktemp("registry")) as reg:
        push(busybox_layout, f"{reg.host}/busybox:1")
        push(busybox_layout, f"{reg.host}/busybox:3")
        yield reg


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ImageService]:
    svc = ImageService(tmp_path / "store")
    try:
        yield svc
    finally:
        await svc.aclose()


def stored_blobs(svc: ImageService) -> list[str]:
    return svc.store.blobs.list()


def stored_layers(svc: ImageService) -> list[str]:
    return svc.store.layers.list()

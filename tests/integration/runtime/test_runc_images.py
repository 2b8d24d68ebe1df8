"""RuncDriver with the real ImageService: an umoci-built, multi-layer OCI image loaded into the
store and run from its unpacked layers (checks the layer order and whiteouts end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.runtime.images import ImageService
from tests.integration.runtime.conftest import DriverFactory, config, run_to_exit
from tests.rootreq import require_root


@pytest.fixture
def image_service(tmp_path: Path) -> ImageService:
    require_root("runc", "umoci", "busybox")
    from tests.oci_support import add_layer, build_busybox_image, tar_layer

    layout = build_busybox_image(tmp_path / "build", layers=2, tag="v1")
    # A top layer that replaces a file of the layer below and deletes another (a whiteout).
    add_layer(
        layout,
        "v1",
        "v2",
        tar_layer(
            [
                ("layers/v1-1.txt", "file", "replaced by the top layer\n"),
                ("bin/.wh.true", "file", b""),
            ]
        ),
    )
    service = ImageService(tmp_path / "images")
    records = service.load(layout)
    assert records
    return service


async def test_runs_a_loaded_multi_layer_image(
    make_driver: DriverFactory, image_service: ImageService
) -> None:
    ref = next(t for r in image_service.list() for t in r.repo_tags if t.endswith(":v2"))
    d = make_driver(images=image_service)
    cfg = config(
        [
            "sh",
            "-c",
            "cat /layers/v1-1.txt; test -e /bin/true && echo present || echo gone; echo $SHOAL_TEST",
        ],
        image=ref,
    )
    status, text = await run_to_exit(d, cfg)
    assert status.exit_code == 0, text
    assert text.splitlines() == ["replaced by the top layer", "gone", "1"]

"""Loading images from files (OCI layout, OCI archive, docker save), and ls/rm with garbage
collection, including a layer kept because an overlay mount uses it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.runtime.images import (
    DigestMismatchError,
    HostileLayerError,
    ImageLoadError,
    ImageNotFoundError,
    ImageService,
)
from tests.integration.images.conftest import stored_blobs, stored_layers
from tests.oci_support import TOOLS, add_layer, index_entry, read_blob, run, tar_layer
from tests.rootreq import require_root


def _skopeo(src: str, dest: str) -> None:
    run("skopeo", "--insecure-policy", "copy", "--quiet", src, dest)


def test_load_oci_layout_directory(service: ImageService, busybox_layout: Path) -> None:
    require_root(*TOOLS)
    records = service.load(busybox_layout)
    assert sorted(r.repo_tags[0] for r in records) == ["localhost/layout:1", "localhost/layout:3"]
    three = service.get("localhost/layout:3")
    assert three.digest == index_entry(busybox_layout, "3")["digest"]
    assert len(three.layers) == 3 and three.config.labels == {"shoal.test.tag": "3"}
    dirs = service.resolve("localhost/layout:3").layer_dirs
    assert (dirs[0] / "bin" / "busybox").is_file()
    assert (dirs[2] / "layers" / "3-1.txt").read_text() == "layer 1 of 3\n"
    # Loading again changes nothing.
    blobs = stored_blobs(service)
    assert [r.digest for r in service.load(busybox_layout)] == [r.digest for r in records]
    assert stored_blobs(service) == blobs


def test_load_oci_archive(service: ImageService, busybox_layout: Path, tmp_path: Path) -> None:
    require_root(*TOOLS)
    archive = tmp_path / "busybox-oci.tar"
    _skopeo(f"oci:{busybox_layout}:3", f"oci-archive:{archive}:shoal.test/busybox:3")
    (record,) = service.load(archive)
    assert record.repo_tags == ["shoal.test/busybox:3"]
    assert record.digest == index_entry(busybox_layout, "3")["digest"]
    assert len(service.resolve("shoal.test/busybox:3").layer_dirs) == 3
    # A bare tag as ref.name is filed under localhost/<file name>.
    bare = tmp_path / "bare.tar"
    _skopeo(f"oci:{busybox_layout}:1", f"oci-archive:{bare}:v1")
    (record,) = service.load(bare)
    assert record.repo_tags == ["localhost/bare:v1"]


def test_load_docker_save_tarball(
    service: ImageService, busybox_layout: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    archive = tmp_path / "saved.tar"
    _skopeo(f"oci:{busybox_layout}:3", f"docker-archive:{archive}:shoal.test/saved:3")
    (record,) = service.load(archive)
    assert record.repo_tags == ["shoal.test/saved:3"]
    oci_manifest = index_entry(busybox_layout, "3")
    assert record.id == _config_digest(busybox_layout, oci_manifest["digest"])
    assert record.config.cmd == ["/bin/sh"]
    dirs = service.resolve("shoal.test/saved:3").layer_dirs
    assert (dirs[0] / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (dirs[1] / "layers" / "3-0.txt").is_file()


def _config_digest(layout: Path, manifest_digest: str) -> str:
    return str(json.loads(read_blob(layout, manifest_digest))["config"]["digest"])


def test_load_refuses_tampered_and_hostile_files(
    service: ImageService, layout_copy: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    add_layer(layout_copy, "1", "hostile", tar_layer([("../../etc/x", "file", b"x")]))
    hostile = tmp_path / "hostile"
    _skopeo(f"oci:{layout_copy}:hostile", f"oci:{hostile}:hostile")
    with pytest.raises(HostileLayerError, match=r"loading .*member '../../etc/x'"):
        service.load(hostile)
    assert service.list() == [] and stored_blobs(service) == [] and stored_layers(service) == []

    tampered = tmp_path / "tampered"
    shutil.copytree(layout_copy, tampered)
    manifest = json.loads(read_blob(tampered, index_entry(tampered, "3")["digest"]))
    blob = tampered / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        service.load(tampered)
    assert service.list() == [] and stored_blobs(service) == [] and stored_layers(service) == []

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(ImageLoadError, match=str(junk)):
        service.load(junk)


def test_list_and_remove_collect_garbage(
    service: ImageService, busybox_layout: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    service.load(busybox_layout)
    one, three = service.get("localhost/layout:1"), service.get("localhost/layout:3")
    assert [r.repo_tags for r in service.list()] == [["localhost/layout:1"], ["localhost/layout:3"]]

    report = service.remove("localhost/layout:3")
    own = sorted(x.digest for x in three.layers[1:])
    assert report[0] == "untagged: localhost/layout:3"
    assert f"deleted: image {three.id} (manifest {three.digest})" in report
    assert sorted(r.split()[-1] for r in report if r.startswith("deleted: layer")) == own
    blob_lines = sorted(r.split()[-1] for r in report if r.startswith("deleted: blob"))
    assert blob_lines == sorted([*own, three.id, three.digest])
    # The shared base layer stays: image 1 still uses it.
    assert stored_layers(service) == [one.layers[0].digest]
    assert service.resolve("localhost/layout:1").layer_dirs[0].is_dir()
    with pytest.raises(ImageNotFoundError, match="localhost/layout:3"):
        service.get("localhost/layout:3")

    # Two tags on one image: removing one only untags.
    service.load(busybox_layout)
    retagged = tmp_path / "retagged.tar"
    _skopeo(f"oci:{busybox_layout}:1", f"oci-archive:{retagged}:localhost/retagged:1")
    (record,) = service.load(retagged)
    assert len(record.repo_tags) == 2
    assert service.remove("localhost/retagged:1") == ["untagged: localhost/retagged:1"]
    service.remove(one.id)  # by id: every tag goes, then the image
    service.remove("localhost/layout:3")
    assert service.list() == [] and stored_blobs(service) == [] and stored_layers(service) == []


def test_remove_keeps_layers_mounted_as_overlay_lowerdirs(
    service: ImageService, busybox_layout: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    service.load(busybox_layout)
    dirs = service.resolve("localhost/layout:3").layer_dirs
    mountpoint = tmp_path / "rootfs"
    mountpoint.mkdir()
    lower = ":".join(str(d) for d in reversed(dirs))  # overlayfs lists the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}",
                    str(mountpoint)], check=True)  # fmt: skip
    try:
        assert (mountpoint / "layers" / "3-1.txt").is_file()
        service.remove("localhost/layout:1")
        report = service.remove("localhost/layout:3")
        kept = [r for r in report if r.startswith("kept: layer")]
        assert len(kept) == 3 and all("in use as an overlay lowerdir" in r for r in kept)
        assert all(d.is_dir() for d in dirs)
        assert not any(r.startswith("deleted: layer") for r in report)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    # Unmounted, the next collection takes them.
    service.load(busybox_layout)
    service.remove("localhost/layout:1")
    service.remove("localhost/layout:3")
    assert stored_layers(service) == [] and not any(d.exists() for d in dirs)

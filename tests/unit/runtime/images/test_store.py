"""The local store without a registry: load hand-written layouts and docker-save tarballs,
look images up every way, remove with garbage collection, leases, and the mountinfo parser."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shoal.runtime.images import (
    DigestMismatchError,
    ImageLoadError,
    ImageNotFoundError,
    ImageService,
    InvalidReferenceError,
)
from shoal.runtime.images._store import ImageStore, _overlay_lowerdirs


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(layers: list[bytes], label: str) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"image": label}},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
    }).encode()  # fmt: skip


def write_layout(root: Path, images: dict[str, list[bytes]]) -> dict[str, str]:
    """An OCI layout with gzipped layers; returns tag -> manifest digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict[str, object]:
        (blobs / _sha(data).split(":")[1]).write_bytes(data)
        return {"digest": _sha(data), "size": len(data)}

    entries, digests = [], {}
    for tag, layers in images.items():
        config = _config(layers, tag)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        **put(gzip.compress(layer, mtime=0))} for layer in layers],
        }  # fmt: skip
        desc = put(json.dumps(manifest).encode())
        digests[tag] = str(desc["digest"])
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc,
                        "annotations": {"org.opencontainers.image.ref.name": tag}})  # fmt: skip
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return digests


BASE = _tar({"bin/tool": b"#!/bin/sh\n", "etc/os-release": b"ID=test\n"})
APP = _tar({"app/main": b"print('hi')\n"})
OTHER = _tar({"other/x": b"x"})


@pytest.fixture
def service(tmp_path: Path) -> ImageService:
    return ImageService(tmp_path / "store")


def test_load_layout_and_look_up_every_way(service: ImageService, tmp_path: Path) -> None:
    digests = write_layout(tmp_path / "demo", {"base": [BASE], "app": [BASE, APP]})
    records = service.load(tmp_path / "demo")
    assert {r.repo_tags[0] for r in records} == {"localhost/demo:base", "localhost/demo:app"}
    app = service.get("localhost/demo:app")
    assert app.digest == digests["app"]
    assert app.config.labels == {"image": "app"}
    for name in (app.id, app.digest, app.id[7:19], app.id[7:], f"localhost/demo@{app.digest}"):
        assert service.get(name) == app, name
    with pytest.raises(ImageNotFoundError, match="localhost/demo:nope is not in the local store"):
        service.get("localhost/demo:nope")
    with pytest.raises(ImageNotFoundError):
        service.get(f"localhost/elsewhere@{app.digest}")  # digest known, repository not
    with pytest.raises(InvalidReferenceError, match="'Nope'"):
        service.get("Nope")
    resolved = service.resolve("localhost/demo:app")
    assert [d.name for d in resolved.layer_dirs] == [x.digest[7:39] for x in app.layers]
    assert (resolved.layer_dirs[1] / "app" / "main").read_bytes() == b"print('hi')\n"


def test_remove_untags_then_collects(service: ImageService, tmp_path: Path) -> None:
    write_layout(tmp_path / "demo", {"base": [BASE], "app": [BASE, APP]})
    service.load(tmp_path / "demo")
    base, app = service.get("localhost/demo:base"), service.get("localhost/demo:app")
    report = service.remove("localhost/demo:app")
    assert report[:2] == [
        "untagged: localhost/demo:app",
        f"deleted: image {app.id} (manifest {app.digest})",
    ]
    assert f"deleted: layer {app.layers[1].digest}" in report
    assert f"deleted: blob {app.layers[1].digest}" in report
    assert f"deleted: blob {base.layers[0].digest}" not in report  # still used by base
    assert service.store.layers.list() == [base.layers[0].digest]
    assert service.remove(base.digest)[0] == "untagged: localhost/demo:base"
    assert service.store.blobs.list() == [] and service.store.layers.list() == []
    with pytest.raises(ImageNotFoundError):
        service.remove("localhost/demo:base")


def test_moving_a_tag_leaves_the_old_image_untagged(service: ImageService, tmp_path: Path) -> None:
    write_layout(tmp_path / "v1" / "demo", {"t": [BASE]})
    write_layout(tmp_path / "v2" / "demo", {"t": [BASE, OTHER]})
    (old,) = service.load(tmp_path / "v1" / "demo")
    (new,) = service.load(tmp_path / "v2" / "demo")
    assert service.get("localhost/demo:t") == new
    assert service.get(old.digest).repo_tags == []
    assert len(service.list()) == 2


def test_a_live_lease_protects_blobs_from_collection(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    digest = _sha(OTHER)
    store.blobs.ingest_bytes(OTHER, digest)
    with store.lease() as lease:
        lease.hold([digest])
        store.discard([digest], [], None)
        assert store.blobs.has(digest)
    store.discard([digest], [], None)
    assert not store.blobs.has(digest)


def test_a_dead_process_lease_is_ignored_and_removed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    digest = _sha(OTHER)
    store.blobs.ingest_bytes(OTHER, digest)
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from shoal.runtime.images._store import ImageStore;"
         "s = ImageStore(Path(sys.argv[1])); l = s.lease().__enter__(); l.hold([sys.argv[2]])",
         str(store.root), digest],
        check=True,
    )  # fmt: skip
    assert child.returncode == 0
    (lease_file,) = (store.root / "leases").glob("*.json")
    store.discard([digest], [], None)
    assert not store.blobs.has(digest) and not lease_file.exists()


def _docker_save(path: Path, layers: list[bytes], tags: list[str], *, gz: bool) -> bytes:
    config = _config(layers, "saved")
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = []
        for i, layer in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            add(names[-1], gzip.compress(layer) if gz else layer)
        config_name = _sha(config).split(":")[1] + ".json"
        add(config_name, config)
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": tags,
                                          "Layers": names}]).encode())  # fmt: skip
    return config


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_load_docker_save(service: ImageService, tmp_path: Path, gz: bool) -> None:
    config = _docker_save(tmp_path / "saved.tar", [BASE, APP], ["saved:1", "x.io/a/b:2"], gz=gz)
    (record,) = service.load(tmp_path / "saved.tar")
    assert record.id == _sha(config)
    assert record.repo_tags == ["docker.io/library/saved:1", "x.io/a/b:2"]
    if not gz:
        assert [x.digest for x in record.layers] == [_sha(BASE), _sha(APP)]
    assert all(x.media_type.endswith("gzip") == gz for x in record.layers)
    dirs = service.resolve("saved:1").layer_dirs
    assert (dirs[0] / "etc" / "os-release").read_bytes() == b"ID=test\n"
    # The synthesised manifest is stable: loading again gives the same image.
    assert service.load(tmp_path / "saved.tar")[0].digest == record.digest


def test_docker_save_layer_must_match_diff_id(service: ImageService, tmp_path: Path) -> None:
    _docker_save(tmp_path / "good.tar", [BASE], ["x:1"], gz=False)
    with tarfile.open(tmp_path / "good.tar") as src, tarfile.open(tmp_path / "bad.tar", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("layer.tar"):
                data = _tar({"bin/tool": b"#!/bin/evil\n", "etc/os-release": b"ID=test\n"})
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(DigestMismatchError, match=r"layer0/layer\.tar"):
        service.load(tmp_path / "bad.tar")
    assert service.list() == [] and service.store.blobs.list() == []


@pytest.mark.parametrize(
    ("files", "complaint"),
    [
        ({"hello.txt": b"hi"}, "is not an OCI layout"),
        ({"manifest.json": b"{"}, "manifest.json is not valid JSON"),
        ({"manifest.json": b"[]"}, "must be a non-empty list"),
        ({"manifest.json": b'[{"Config": 1}]'}, "field 'Config' must be a file name"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]'}, "entry 'c.json' is missing"),
        ({"oci-layout": b'{"imageLayoutVersion": "2.0.0"}', "index.json": b"{}"},
         "imageLayoutVersion '2.0.0' is not supported"),
    ],
)  # fmt: skip
def test_bad_archives_are_named(
    service: ImageService, tmp_path: Path, files: dict[str, bytes], complaint: str
) -> None:
    path = tmp_path / "archive.tar"
    path.write_bytes(_tar(files))
    with pytest.raises(ImageLoadError) as caught:
        service.load(path)
    assert str(path) in str(caught.value) and complaint in str(caught.value)


def test_mountinfo_lowerdirs(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "90 22 0:50 / /run/c1 rw shared:40 - overlay overlay "
        "rw,lowerdir=/s/layers/aa:/s/layers/b\\134:b,upperdir=/u,workdir=/w\n"
        "91 22 0:51 / /run/c2 rw - overlay overlay rw,lowerdir+=/s/with\\040space,datadir+=/s/d\n"
    )
    assert _overlay_lowerdirs(mountinfo) == {
        "/s/layers/aa",
        "/s/layers/b:b",
        "/s/with space",
        "/s/d",
    }


def test_layer_dir_names_are_short_and_collisions_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", layer_mode="flatten")
    blob = tmp_path / "layer.tar"
    blob.write_bytes(BASE)
    first = "sha256:" + "ab" * 16 + "00" * 16
    clash = "sha256:" + "ab" * 16 + "11" * 16
    path = store.layers.ensure(first, blob, "application/vnd.oci.image.layer.v1.tar")
    assert path.name == "ab" * 16
    with pytest.raises(Exception, match="already holds"):
        store.layers.ensure(clash, blob, "application/vnd.oci.image.layer.v1.tar")
    assert os.path.isdir(path)

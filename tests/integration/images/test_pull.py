"""Pulling from a real docker-registry: records, shared layers, pull policies, single-flight,
indexes, registry and transport errors, tampered blobs and hostile layers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import uuid
from pathlib import Path

import pytest

from shoal.runtime.images import (
    DigestMismatchError,
    HostileLayerError,
    ImageError,
    ImageNotFoundError,
    ImagePullError,
    ImageService,
    PullProgress,
)
from shoal.testing import free_port
from tests.integration.images.conftest import stored_blobs, stored_layers
from tests.oci_support import (
    BUSYBOX,
    TOOLS,
    Registry,
    add_layer,
    build_busybox_image,
    make_index,
    push,
    tar_layer,
)
from tests.rootreq import require_root


def _nothing_stored(svc: ImageService) -> None:
    assert svc.list() == []
    assert stored_blobs(svc) == []
    assert stored_layers(svc) == []
    assert list((svc.store.root / "ingest").glob("*")) == []
    assert list((svc.store.root / "layers").glob(".*tmp*")) == []


async def test_anonymous_pull_records_config_and_unpacks(
    service: ImageService, shared_registry: Registry
) -> None:
    require_root(*TOOLS)
    ref = f"{shared_registry.host}/busybox:1"
    record = await service.pull(ref)
    assert record.repo_tags == [ref]
    assert record.config.cmd == ["/bin/sh"]
    assert record.config.env == ["SHOAL_TEST=1"]
    assert record.config.labels == {"shoal.test.tag": "1"}
    assert (record.os, record.architecture) == ("linux", "amd64")
    assert len(record.layers) == 1
    assert record.size == sum(layer.size for layer in record.layers) + len(
        service.store.blobs.path(record.id).read_bytes()
    )
    # Every way of naming it finds the same image.
    for name in (
        ref,
        record.id,
        record.id[7:19],
        f"{shared_registry.host}/busybox@{record.digest}",
    ):
        assert service.get(name).digest == record.digest, name
    resolved = service.resolve(ref)
    assert resolved.record == record
    (layer_dir,) = resolved.layer_dirs
    assert (layer_dir / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(layer_dir / "bin" / "sh") == "busybox"
    assert len(str(layer_dir).rsplit("/", 1)[1]) == 32  # short lowerdir names
    assert service.store.layers.mode == "overlay"  # root: overlay-ready layers


async def test_shared_layer_is_stored_once_and_reported_cached(
    service: ImageService, shared_registry: Registry
) -> None:
    require_root(*TOOLS)
    one = await service.pull(f"{shared_registry.host}/busybox:1")
    events: list[PullProgress] = []
    three = await service.pull(f"{shared_registry.host}/busybox:3", progress=events.append)
    shared = one.layers[0].digest
    assert three.layers[0].digest == shared
    layer_events = {e.digest: e for e in events if e.kind == "layer" and e.done}
    assert layer_events[shared].cached
    assert [layer_events[x.digest].cached for x in three.layers[1:]] == [False, False]
    assert all(e.reference == f"{shared_registry.host}/busybox:3" for e in events)
    # one shared layer + two own layers; 2 configs + 2 manifests
    assert sorted(stored_layers(service)) == sorted({x.digest for x in three.layers})
    assert len(stored_blobs(service)) == 3 + 2 + 2


async def test_pull_policies(
    service: ImageService, shared_registry: Registry, layout_copy: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    ref = f"{shared_registry.host}/policy-{uuid.uuid4().hex[:8]}:v"
    with pytest.raises(ImageNotFoundError, match="pull policy is Never") as caught:
        await service.ensure(ref, "Never")
    assert ref in str(caught.value)
    push(layout_copy, ref, src_tag="1")
    first, pulled = await service.ensure(ref, "IfNotPresent")
    assert pulled and first.repo_tags == [ref]
    again, pulled = await service.ensure(ref, "IfNotPresent")
    assert (again, pulled) == (first, False)
    assert await service.ensure(ref, "Never") == (first, False)

    # Always asks the registry; the tag is unchanged, so nothing is downloaded.
    mtimes = {d: service.store.blobs.path(d).stat().st_mtime_ns for d in stored_blobs(service)}
    events: list[PullProgress] = []
    same, pulled = await service.ensure(ref, "Always", progress=events.append)
    assert pulled and same.digest == first.digest
    assert [(e.kind, e.cached) for e in events] == [("manifest", True)]
    assert {
        d: service.store.blobs.path(d).stat().st_mtime_ns for d in stored_blobs(service)
    } == mtimes

    # The tag moves: Always gets the new image; the old one stays, untagged.
    push(layout_copy, ref, src_tag="3")
    moved, pulled = await service.ensure(ref, "Always")
    assert pulled and moved.digest != first.digest and len(moved.layers) == 3
    assert service.get(ref).digest == moved.digest
    assert service.get(first.digest).repo_tags == []


async def test_concurrent_pulls_share_one_download(
    service: ImageService, shared_registry: Registry, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    ref = f"{shared_registry.host}/busybox:3"
    solo = ImageService(tmp_path / "solo")
    try:
        await solo.pull(ref)
        one_pull = solo.registry.requests
    finally:
        await solo.aclose()
    seen: list[list[PullProgress]] = [[], [], []]
    records = await asyncio.gather(*(service.pull(ref, progress=s.append) for s in seen))
    assert records[0] == records[1] == records[2]
    assert service.registry.requests == one_pull
    assert all(any(e.kind == "layer" and e.done for e in s) for s in seen)


async def test_index_resolves_to_host_platform(
    service: ImageService, shared_registry: Registry, layout_copy: Path
) -> None:
    require_root(*TOOLS)
    index_digest = make_index(
        layout_copy, "multi", {"linux/arm64/v8": "1", "linux/amd64": "3", "linux/s390x": "1"}
    )
    repo = f"{shared_registry.host}/multi-{uuid.uuid4().hex[:8]}"
    push(layout_copy, f"{repo}:multi", all_platforms=True)
    record = await service.pull(f"{repo}:multi")
    assert record.architecture == "amd64"
    assert record.config.labels["shoal.test.platform"] == "linux/amd64"
    assert len(record.layers) == 3
    assert service.get(f"{repo}@{index_digest}").digest == record.digest
    # An index without the host's platform names what it does offer.
    make_index(layout_copy, "foreign", {"linux/arm64/v8": "1", "linux/s390x": "1"})
    push(layout_copy, f"{repo}:foreign", all_platforms=True)
    with pytest.raises(
        ImageError, match=r"no manifest for linux/amd64.*linux/arm64/v8, linux/s390x"
    ):
        await service.pull(f"{repo}:foreign")


async def test_unknown_image_carries_the_registry_message(
    service: ImageService, shared_registry: Registry
) -> None:
    require_root(*TOOLS)
    ref = f"{shared_registry.host}/busybox:no-such-tag"
    with pytest.raises(ImagePullError, match="manifest unknown: manifest unknown") as caught:
        await service.pull(ref)
    assert ref in str(caught.value) and caught.value.status == 404
    with pytest.raises(ImagePullError, match=r"name unknown|manifest unknown"):
        await service.pull(f"{shared_registry.host}/nobody-{uuid.uuid4().hex[:6]}/here:1")
    _nothing_stored(service)


async def test_connection_refused_names_host_and_port(service: ImageService) -> None:
    port = free_port()
    with pytest.raises(ImagePullError, match=f"127.0.0.1:{port}: connection refused"):
        await service.pull(f"127.0.0.1:{port}/busybox:1")
    _nothing_stored(service)


async def test_tampered_blob_is_refused_and_nothing_is_stored(
    service: ImageService, shared_registry: Registry, layout_copy: Path
) -> None:
    require_root(*TOOLS)
    unique = tar_layer([("payload.bin", "file", os.urandom(4096))])
    add_layer(layout_copy, "3", "tampered", unique)
    ref = f"{shared_registry.host}/tampered-{uuid.uuid4().hex[:8]}:tampered"
    push(layout_copy, ref)
    data_path = shared_registry.blob_data("sha256:" + hashlib.sha256(unique).hexdigest())
    data = bytearray(data_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data_path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        await service.pull(ref)
    _nothing_stored(service)


@pytest.mark.parametrize(
    ("entries", "member"),
    [
        ([("../escape.txt", "file", b"out")], "../escape.txt"),
        ([("evil", "sym", "{outside}"), ("evil/pwned", "file", b"x")], "evil/pwned"),
    ],
    ids=["dotdot", "write-through-absolute-symlink"],
)
async def test_hostile_layer_is_refused_naming_the_member(
    service: ImageService,
    shared_registry: Registry,
    layout_copy: Path,
    tmp_path: Path,
    entries: list[tuple[str, str, bytes | str]],
    member: str,
) -> None:
    require_root(*TOOLS)
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = tar_layer([(n, k, d.format(outside=outside) if isinstance(d, str) else d)
                       for n, k, d in entries])  # fmt: skip
    add_layer(layout_copy, "1", "hostile", layer)
    ref = f"{shared_registry.host}/hostile-{uuid.uuid4().hex[:8]}:hostile"
    push(layout_copy, ref)
    with pytest.raises(HostileLayerError) as caught:
        await service.pull(ref)
    assert caught.value.member == member
    assert list(outside.iterdir()) == []
    assert not (service.store.root / "escape.txt").exists()
    _nothing_stored(service)


async def test_a_hostile_pull_keeps_what_other_images_use(
    service: ImageService, shared_registry: Registry, layout_copy: Path
) -> None:
    require_root(*TOOLS)
    good = await service.pull(f"{shared_registry.host}/busybox:1")
    add_layer(layout_copy, "1", "bad", tar_layer([("../x", "file", b"x")]))
    ref = f"{shared_registry.host}/bad-{uuid.uuid4().hex[:8]}:bad"
    push(layout_copy, ref)
    with pytest.raises(HostileLayerError):
        await service.pull(ref)
    assert [r.digest for r in service.list()] == [good.digest]
    assert stored_layers(service) == [good.layers[0].digest]
    assert sorted(stored_blobs(service)) == sorted([good.digest, good.id, good.layers[0].digest])
    assert service.resolve(good.digest).layer_dirs[0].is_dir()


async def test_multi_layer_image_unpacks_every_layer(
    service: ImageService, shared_registry: Registry, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    layout = build_busybox_image(tmp_path / "five", layers=5, tag="five", cmd=("/bin/true",))
    ref = f"{shared_registry.host}/five-{uuid.uuid4().hex[:8]}:five"
    push(layout, ref)
    resolved = service.resolve((await service.pull(ref)).digest)
    assert len(resolved.layer_dirs) == 5
    for n, layer_dir in enumerate(resolved.layer_dirs[1:], start=1):
        assert (layer_dir / "layers" / f"five-{n}.txt").read_text() == f"layer {n} of five\n"
        assert stat.S_ISDIR(layer_dir.stat().st_mode)
    assert resolved.record.config.cmd == ["/bin/true"]

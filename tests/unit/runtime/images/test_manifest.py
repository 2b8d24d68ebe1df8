"""Manifest, index and config parsing; platform selection from an index."""

from __future__ import annotations

import json

import pytest

from shoal.runtime.images import ImageConfig, ImageError
from shoal.runtime.images._manifest import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    host_platform,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)

D = ["sha256:" + c * 64 for c in "0123456789abcdef"]


def _entry(i: int, plat: str | None, media: str = OCI_MANIFEST) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": media, "digest": D[i], "size": 100 + i}
    if plat is not None:
        os_name, arch, *variant = plat.split("/")
        entry["platform"] = {"os": os_name, "architecture": arch}
        if variant:
            entry["platform"]["variant"] = variant[0]  # type: ignore[index]
    return entry


def _pick(entries: list[dict[str, object]], want: Platform) -> str:
    return select_platform(parse_index({"manifests": entries}, "idx"), want).digest


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("i686", Platform("linux", "386")),
        ("riscv64", Platform("linux", "riscv64")),
    ],
)
def test_host_platform(machine: str, expected: Platform) -> None:
    assert host_platform(machine) == expected


def test_platform_selection() -> None:
    entries = [
        _entry(0, "linux/arm/v6"),
        _entry(1, "linux/arm/v7"),
        _entry(2, "linux/arm64"),
        _entry(3, "linux/amd64"),
        _entry(4, "windows/amd64"),
        _entry(5, "unknown/unknown"),
    ]
    assert _pick(entries, host_platform("x86_64")) == D[3]
    assert _pick(entries, host_platform("aarch64")) == D[2]  # no variant given: still v8
    assert _pick(entries, host_platform("armv7l")) == D[1]
    assert _pick(entries, Platform("windows", "amd64")) == D[4]
    # exact variant beats none
    both = [_entry(6, "linux/arm64"), _entry(7, "linux/arm64/v8")]
    assert _pick(both, host_platform("aarch64")) == D[7]
    # a lone manifest with no platform is taken as is (single-arch indexes)
    assert _pick([_entry(8, None)], host_platform("x86_64")) == D[8]


def test_platform_missing_names_what_is_offered() -> None:
    entries = [_entry(0, "linux/arm64/v8"), _entry(1, "linux/s390x"), _entry(2, "unknown/unknown")]
    with pytest.raises(
        ImageError, match=r"no manifest for linux/amd64 \(it offers: linux/arm64/v8, "
    ):
        _pick(entries, host_platform("x86_64"))


def _manifest(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": D[0], "size": 10},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": D[1], "size": 20}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def test_manifest_parsing() -> None:
    manifest = parse_manifest(_manifest(), "m")
    assert manifest.config == Descriptor("application/vnd.docker.container.image.v1+json", D[0], 10)
    assert [layer.digest for layer in manifest.layers] == [D[1]]
    # OCI manifests may omit mediaType
    oci = _manifest(mediaType=None)
    del oci["mediaType"]
    assert parse_manifest(oci, "m").media_type == OCI_MANIFEST


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"schemaVersion": 1}, "schemaVersion must be 2"),
        ({"mediaType": "application/vnd.docker.distribution.manifest.v1+json"}, "unsupported manifest"),
        ({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D[1],
                      "size": 1}]}, "layers[0] has unsupported media type .*zstd is not supported"),
        ({"layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                      "digest": D[1], "size": 1}]}, "layers[0] has unsupported media type"),
        ({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "md5:x",
                      "size": 1}]}, "invalid digest"),
        ({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D[1],
                      "size": -1}]}, "layers[0]: field 'size' must be a non-negative integer"),
        ({"config": "x"}, "config must be an object"),
        ({"layers": {}}, "field 'layers' must be a list"),
    ],
)  # fmt: skip
def test_bad_manifests_are_named(changes: dict[str, object], complaint: str) -> None:
    with pytest.raises(ImageError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(_manifest(**changes), "manifest X")


def test_config_to_image_config() -> None:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Entrypoint": ["/entry"],
            "Cmd": ["serve", "--port", "80"],
            "Env": ["PATH=/bin", "A=b=c"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "Labels": {"k": "v"},
            "StopSignal": "SIGQUIT",
        },
        "rootfs": {"type": "layers", "diff_ids": [D[2], D[3]]},
    }
    parsed = parse_config(json.dumps(config).encode(), "cfg")
    assert parsed.config == ImageConfig(
        entrypoint=["/entry"],
        cmd=["serve", "--port", "80"],
        env=["PATH=/bin", "A=b=c"],
        working_dir="/srv",
        user="1000:1000",
        exposed_ports=["53/udp", "80/tcp"],
        labels={"k": "v"},
        stop_signal="SIGQUIT",
    )
    assert (parsed.os, parsed.architecture, parsed.created) == ("linux", "amd64", config["created"])
    assert parsed.diff_ids == [D[2], D[3]]
    # nulls (as Docker writes them) mean empty
    empty = parse_config(b'{"config": {"Cmd": null, "Env": null, "Labels": null}}', "cfg")
    assert empty.config == ImageConfig()


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        (b"[]", "cfg must be a JSON object"),
        (b"{", "cfg is not valid JSON"),
        (b'{"config": {"Cmd": "sh -c x"}}', "field 'config.Cmd' must be a list of strings"),
        (b'{"config": {"Env": [1]}}', "field 'config.Env' must be a list of strings"),
        (b'{"config": {"Labels": {"a": 1}}}', "field 'config.Labels' must map strings"),
        (b'{"config": {"User": 0}}', "field 'User' must be a string"),
        (b'{"rootfs": {"diff_ids": "x"}}', "field 'rootfs.diff_ids'"),
    ],
)
def test_bad_configs_are_named(config: bytes, complaint: str) -> None:
    with pytest.raises(ImageError, match=complaint.replace(".", r"\.")):
        parse_config(config, "cfg")

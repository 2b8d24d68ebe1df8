"""unpack_layer and LayerCache on real tarballs: contents, whiteouts, and hostile layers."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from shoal.runtime.images import (
    LAYER_TAR,
    LAYER_TAR_GZIP,
    HostileLayerError,
    LayerCache,
    UnsupportedLayerError,
    unpack_layer,
)

Entry = tuple[str, str] | tuple[str, str, str | bytes]


def make_layer(path: Path, entries: list[Entry], *, gz: bool = True) -> Path:
    """Write a tarball with entries (name, kind[, data/linkname]); kind: file dir sym link chr blk fifo."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for entry in entries:
            name, kind = entry[0], entry[1]
            extra = entry[2] if len(entry) == 3 else b""
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            data = b""
            if kind == "file":
                data = extra if isinstance(extra, bytes) else extra.encode()
                info.size = len(data)
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind in ("sym", "link"):
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = str(extra)
            else:
                info.type = {"chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}.get(
                    kind, tarfile.FIFOTYPE
                )
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("gz", [True, False])
def test_regular_files_dirs_symlinks_and_hardlinks(tmp_path: Path, gz: bool) -> None:
    blob = make_layer(
        tmp_path / "layer",
        [
            ("./", "dir"),
            ("./etc", "dir"),
            ("./etc/hostname", "file", b"box\n"),
            ("./bin", "dir"),
            ("./bin/busybox", "file", b"#!bin"),
            ("./bin/sh", "sym", "/bin/busybox"),  # absolute targets are container-rooted: allowed
            ("./bin/ash", "sym", "busybox"),
            ("./bin/hard", "link", "bin/busybox"),
        ],
        gz=gz,
    )
    dest = tmp_path / "root"
    unpack_layer(blob, dest, media_type=LAYER_TAR_GZIP if gz else LAYER_TAR)
    assert (dest / "etc" / "hostname").read_bytes() == b"box\n"
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox"
    assert (dest / "bin" / "ash").read_bytes() == b"#!bin"
    assert os.stat(dest / "bin" / "hard").st_ino == os.stat(dest / "bin" / "busybox").st_ino


def test_setuid_bits_are_stripped(tmp_path: Path) -> None:
    path = tmp_path / "layer"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("su")
        info.mode = 0o4755
        tar.addfile(info, io.BytesIO(b""))
    unpack_layer(path, tmp_path / "root")
    assert stat.S_IMODE((tmp_path / "root" / "su").stat().st_mode) == 0o755


HOSTILE: list[tuple[str, list[Entry], str, str]] = [
    ("absolute", [("/etc/x", "file", b"x")], "/etc/x", "absolute path"),
    ("dotdot", [("../escape", "file", b"x")], "../escape", "'..'"),
    ("nested-dotdot", [("a", "dir"), ("a/../../escape", "file", b"x")], "a/../../escape", "'..'"),
    (
        "symlink-then-write",
        [("link", "sym", "/etc"), ("link/shoal-must-not-exist", "file", b"x")],
        "link/shoal-must-not-exist",
        "through symlink",
    ),
    (
        "relative-symlink-out",
        [("d", "dir"), ("d/up", "sym", "../.."), ("d/up/x", "file", b"x")],
        "d/up/x",
        "leaves the root",
    ),
    ("hardlink-absolute", [("h", "link", "/etc/passwd")], "h", "hardlink to absolute path"),
    ("hardlink-dotdot", [("h", "link", "../../etc/passwd")], "h", "outside the layer root"),
    ("char-device", [("dev/null", "chr")], "dev/null", "character device"),
    ("block-device", [("dev/sda", "blk")], "dev/sda", "block device"),
    ("fifo", [("pipe", "fifo")], "pipe", "FIFO"),
]


@pytest.mark.parametrize("mode", ["flatten", "overlay"])
@pytest.mark.parametrize(
    ("entries", "member", "reason"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_layer_is_refused_and_writes_nothing(
    tmp_path: Path, entries: list[Entry], member: str, reason: str, mode: str
) -> None:
    blob = make_layer(tmp_path / "layer", [("ok", "file", b"fine"), *entries])
    dest = tmp_path / "work" / "root"
    dest.parent.mkdir()
    with pytest.raises(HostileLayerError) as info:
        unpack_layer(blob, dest, mode=mode)  # type: ignore[arg-type]
    assert info.value.member == member
    assert repr(member) in str(info.value)
    assert reason in info.value.reason
    assert not (tmp_path / "escape").exists()
    assert not Path("/etc/shoal-must-not-exist").exists()
    # Validation runs before any write: not even the harmless first member lands.
    assert tree(tmp_path / "work") <= {"root"}
    if dest.exists():
        assert tree(dest) == set()


def test_symlink_from_earlier_layer_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("untouched")
    dest = tmp_path / "root"
    unpack_layer(make_layer(tmp_path / "l1", [("etc", "sym", str(outside))]), dest)
    layer2 = make_layer(
        tmp_path / "l2", [("ok", "file", b"x"), ("etc/passwd", "file", b"root::0:0::/:/bin/sh")]
    )
    with pytest.raises(HostileLayerError, match="etc/passwd") as info:
        unpack_layer(layer2, dest)
    assert info.value.member == "etc/passwd"
    assert tree(outside) == {"keep"}
    assert (outside / "keep").read_text() == "untouched"
    assert not (dest / "ok").exists()


def test_upper_file_replaces_lower_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file")
    dest = tmp_path / "root"
    unpack_layer(make_layer(tmp_path / "l1", [("f", "sym", str(outside))]), dest)
    unpack_layer(make_layer(tmp_path / "l2", [("f", "file", b"image file")]), dest)
    assert outside.read_text() == "host file"
    assert not (dest / "f").is_symlink()
    assert (dest / "f").read_bytes() == b"image file"


def test_relative_symlinked_parent_inside_root_is_followed(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    unpack_layer(make_layer(tmp_path / "l1", [("usr/lib", "dir"), ("lib", "sym", "usr/lib")]), dest)
    unpack_layer(make_layer(tmp_path / "l2", [("lib/libc.so", "file", b"elf")]), dest)
    assert (dest / "usr" / "lib" / "libc.so").read_bytes() == b"elf"
    assert (dest / "lib").is_symlink()


def test_flatten_whiteouts_remove_file_and_directory(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    lower: list[Entry] = [
        ("etc", "dir"),
        ("etc/keep", "file", b"k"),
        ("etc/gone", "file", b"g"),
        ("var/cache/a", "file", b"a"),
        ("var/cache/sub/b", "file", b"b"),
    ]
    unpack_layer(make_layer(tmp_path / "l1", lower), dest)
    upper: list[Entry] = [
        ("etc/.wh.gone", "file"),
        ("var/.wh.cache", "file"),
        ("new", "file", b"n"),
    ]
    names = unpack_layer(make_layer(tmp_path / "l2", upper), dest)
    assert names == ["etc/.wh.gone", "var/.wh.cache"]
    assert tree(dest) == {"etc", "etc/keep", "var", "new"}


def test_flatten_opaque_directory_hides_lower_but_keeps_new(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    unpack_layer(make_layer(tmp_path / "l1", [("d/old1", "file"), ("d/sub/old2", "file")]), dest)
    upper: list[Entry] = [
        ("d", "dir"),
        ("d/new", "file", b"n"),
        ("d/.wh..wh..opq", "file"),
        ("d/sub2/x", "file"),
    ]
    unpack_layer(make_layer(tmp_path / "l2", upper), dest)
    assert tree(dest) == {"d", "d/new", "d/sub2", "d/sub2/x"}


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay whiteouts need root (CI runs as root)")


def test_overlay_whiteout_is_char_device_0_0_and_opaque_xattr(tmp_path: Path) -> None:
    _require_root()
    dest = tmp_path / "layer-dir"
    upper: list[Entry] = [
        ("etc/.wh.gone", "file"),
        ("d/.wh..wh..opq", "file"),
        ("d/new", "file", b"n"),
    ]
    unpack_layer(make_layer(tmp_path / "l", upper), dest, mode="overlay")
    st = os.lstat(dest / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode)
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert not (dest / "etc" / ".wh.gone").exists()
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert (dest / "d" / "new").read_bytes() == b"n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overlay_refuses_non_empty_dest(tmp_path: Path) -> None:
    dest = tmp_path / "layer-dir"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(FileExistsError):
        unpack_layer(make_layer(tmp_path / "l", [("a", "file")]), dest, mode="overlay")


def test_zstd_is_refused_clearly(tmp_path: Path) -> None:
    blob = make_layer(tmp_path / "l", [("a", "file")])
    with pytest.raises(UnsupportedLayerError, match="zstd"):
        unpack_layer(blob, tmp_path / "r", media_type="application/vnd.oci.image.layer.v1.tar+zstd")


@pytest.mark.parametrize("mode", ["overlay", "flatten"])
def test_layer_cache_unpacks_once(tmp_path: Path, mode: str) -> None:
    if mode == "overlay":
        _require_root()
    digest = "sha256:" + "ab" * 32
    blob = make_layer(tmp_path / "l", [("a", "file", b"1"), ("gone/.wh.x", "file")])
    cache = LayerCache(tmp_path / "store", mode=mode)  # type: ignore[arg-type]
    path = cache.ensure(digest, blob)
    assert path == tmp_path / "store" / "layers" / ("ab" * 16)  # short: overlay lowerdir option
    assert (path / "a").read_bytes() == b"1"
    (path / "a").write_bytes(b"changed")  # a second unpack would restore it
    blob.unlink()  # ... or fail outright
    assert cache.ensure(digest, blob) == path
    assert (path / "a").read_bytes() == b"changed"
    sidecar = path.with_name(path.name + ".whiteouts.json")
    if mode == "flatten":
        assert json.loads(sidecar.read_text()) == ["gone/.wh.x"]
        assert cache.whiteouts(digest) == ["gone/.wh.x"]
        assert not (path / "gone" / "x").exists()
    else:
        assert not sidecar.exists()
        assert stat.S_ISCHR(os.lstat(path / "gone" / "x").st_mode)


def test_layer_cache_failed_unpack_leaves_nothing(tmp_path: Path) -> None:
    digest = "sha256:" + "cd" * 32
    blob = make_layer(tmp_path / "l", [("../x", "file")])
    cache = LayerCache(tmp_path / "store")
    with pytest.raises(HostileLayerError):
        cache.ensure(digest, blob)
    assert {p for p in tree(tmp_path / "store" / "layers") if not p.endswith(".lock")} == set()


def test_layer_cache_redoes_a_layer_unpacked_in_the_other_mode(tmp_path: Path) -> None:
    _require_root()
    digest = "sha256:" + "ef" * 32
    blob = make_layer(tmp_path / "l", [("a", "file", b"1"), ("gone/.wh.x", "file")])
    flat = LayerCache(tmp_path / "store", mode="flatten")
    path = flat.ensure(digest, blob)
    assert flat.has(digest) and not (path / "gone" / "x").exists()
    overlay = LayerCache(tmp_path / "store", mode="overlay")
    assert not overlay.has(digest)
    assert overlay.ensure(digest, blob) == path
    assert stat.S_ISCHR(os.lstat(path / "gone" / "x").st_mode)
    assert overlay.list() == [digest]
    assert overlay.remove(digest) and not path.exists() and overlay.list() == []

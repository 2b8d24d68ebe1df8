"""Pod volume setup and teardown on a real filesystem (tmpfs mounts when root)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent._volumes import PodVolumes, _mounts_under, _unmount
from shoal.api import Pod
from tests.rootreq import require_root


def make_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None,
             uid: str = "uid-1", fs_group: int | None = None) -> Pod:  # fmt: skip
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "command": ["true"], "volumeMounts": mounts or []}],
        "volumes": volumes,
    }
    if fs_group is not None:
        spec["securityContext"] = {"fsGroup": fs_group}
    return Pod.model_validate({"metadata": {"name": "p", "uid": uid}, "spec": spec})


@pytest.fixture
def volumes(tmp_path: Path) -> Iterator[PodVolumes]:
    pv = PodVolumes(tmp_path / "pods")
    try:
        yield pv
    finally:
        for point in sorted(_mounts_under(tmp_path), key=lambda p: len(str(p)), reverse=True):
            _unmount(point)


def test_empty_dir_is_created_world_writable_and_removed(volumes: PodVolumes) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}])
    setup = volumes.setup(pod)
    assert setup.ok and setup.errors == {}
    path = setup.paths["scratch"]
    assert path == volumes.root / "uid-1" / "volumes" / "scratch"
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o777
    (path / "data.txt").write_text("kept across setups")
    again = volumes.setup(pod)  # idempotent: an agent restart finds the same directory
    assert (again.paths["scratch"] / "data.txt").read_text() == "kept across setups"
    volumes.teardown("uid-1")
    assert not (volumes.root / "uid-1").exists()
    volumes.teardown("uid-1")  # nothing left: no error


def test_host_path_types(volumes: PodVolumes, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "file.txt").write_text("x")
    pod = make_pod(
        [
            {
                "name": "mk",
                "hostPath": {"path": str(host / "new/dir"), "type": "DirectoryOrCreate"},
            },
            {"name": "mkf", "hostPath": {"path": str(host / "new.txt"), "type": "FileOrCreate"}},
            {"name": "dir", "hostPath": {"path": str(host), "type": "Directory"}},
            {"name": "file", "hostPath": {"path": str(host / "file.txt"), "type": "File"}},
            {"name": "any", "hostPath": {"path": str(host / "absent")}},
            {"name": "notdir", "hostPath": {"path": str(host / "file.txt"), "type": "Directory"}},
            {"name": "nofile", "hostPath": {"path": str(host / "nope"), "type": "File"}},
            {
                "name": "mkdir-over-file",
                "hostPath": {"path": str(host / "file.txt"), "type": "DirectoryOrCreate"},
            },
        ]
    )
    setup = volumes.setup(pod)
    assert (host / "new" / "dir").is_dir()
    assert (host / "new.txt").is_file() and (host / "new.txt").read_text() == ""
    assert setup.paths == {
        "mk": host / "new/dir",
        "mkf": host / "new.txt",
        "dir": host,
        "file": host / "file.txt",
        "any": host / "absent",  # type "": no check, as in Kubernetes
    }
    assert setup.errors == {
        "notdir": 'MountVolume.SetUp failed for volume "notdir" : hostPath type check failed: '
        f"{host / 'file.txt'} is not a directory",
        "nofile": 'MountVolume.SetUp failed for volume "nofile" : hostPath type check failed: '
        f"{host / 'nope'} is not a file",
        "mkdir-over-file": 'MountVolume.SetUp failed for volume "mkdir-over-file" : hostPath '
        f"type check failed: {host / 'file.txt'} is not a directory",
    }
    volumes.teardown("uid-1")
    assert (host / "file.txt").read_text() == "x", "a hostPath belongs to the node and stays"


def test_subpaths_are_created_and_may_not_escape(volumes: PodVolumes, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    pod = make_pod(
        [{"name": "data", "emptyDir": {}}],
        [{"name": "data", "mountPath": "/a", "subPath": "x/y"}],
    )
    setup = volumes.setup(pod)
    assert volumes.subpaths(pod.spec.containers[0], setup.paths) is None
    assert (setup.paths["data"] / "x" / "y").is_dir()
    (setup.paths["data"] / "link").symlink_to(outside)
    escaping = make_pod(
        [{"name": "data", "emptyDir": {}}],
        [{"name": "data", "mountPath": "/a", "subPath": "link"}],
    )
    problem = volumes.subpaths(escaping.spec.containers[0], setup.paths)
    assert problem == (
        'failed to prepare subPath "link" for volumeMount "data" of container "c": '
        "it resolves outside the volume"
    )


def test_sweep_removes_departed_pods_only(volumes: PodVolumes) -> None:
    for uid in ("keep", "gone-1", "gone-2"):
        volumes.setup(make_pod([{"name": "v", "emptyDir": {}}], uid=uid))
    assert sorted(volumes.sweep({"keep"})) == ["gone-1", "gone-2"]
    assert [p.name for p in volumes.root.iterdir()] == ["keep"]


def test_bad_uid_is_refused(volumes: PodVolumes) -> None:
    with pytest.raises(ValueError, match="invalid pod uid"):
        volumes.teardown("../etc")


def test_memory_empty_dir_is_a_sized_tmpfs_with_fs_group(volumes: PodVolumes) -> None:
    require_root()
    pod = make_pod(
        [{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}], fs_group=4321
    )
    path = volumes.setup(pod).paths["cache"]
    assert os.path.ismount(path)
    st = os.statvfs(path)
    assert st.f_blocks * st.f_frsize == 8 * 2**20
    info = path.stat()
    assert info.st_gid == 4321 and stat.S_IMODE(info.st_mode) == 0o2777
    volumes.setup(pod)  # already mounted: not mounted twice
    assert _mounts_under(path) == [path]
    volumes.teardown("uid-1")
    assert _mounts_under(volumes.root) == [] and not volumes.root.joinpath("uid-1").exists()


def test_release_mounts_unmounts_but_keeps_dirs(volumes: PodVolumes) -> None:
    require_root()
    path = volumes.setup(make_pod([{"name": "m", "emptyDir": {"medium": "Memory"}}])).paths["m"]
    assert os.path.ismount(path)
    volumes.release_mounts()
    assert not os.path.ismount(path) and path.is_dir()

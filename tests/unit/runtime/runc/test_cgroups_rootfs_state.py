"""cgroup layout/usage parsing (v1 and v2 on temp dirs), mountinfo, sandbox layout, metadata."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from shoal.runtime.runc._state import Container, runc_id_for

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 /nested /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
50 23 0:50 / /srv/my\\040dir rw,relatime - tmpfs tmpfs rw
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v1_layout_from_mountinfo(tmp_path: Path) -> None:
    layout = cg.CgroupLayout.detect(root=tmp_path, mountinfo=HYBRID_MOUNTINFO)
    assert layout.version == 1
    assert layout.controllers["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.controllers["memory"] == Path("/sys/fs/cgroup/memory")
    assert "name=systemd" not in layout.controllers
    # Every hierarchy runc populates, including name=systemd and unified; not a nested root.
    assert layout.hierarchies == (
        Path("/sys/fs/cgroup/cpu,cpuacct"),
        Path("/sys/fs/cgroup/memory"),
        Path("/sys/fs/cgroup/pids"),
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
    )
    assert layout.dir_for("memory", "/shoal/p/c") == Path("/sys/fs/cgroup/memory/shoal/p/c")
    assert layout.dir_for("hugetlb", "/shoal/p/c") is None


def test_v2_layout_usage_and_oom(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    layout = cg.CgroupLayout.detect(root=tmp_path, mountinfo=HYBRID_MOUNTINFO)
    assert layout.version == 2
    assert layout.hierarchies == (tmp_path,)
    leaf = tmp_path / "shoal" / "pod" / "c"
    assert layout.dir_for("memory", "/shoal/pod/c") == leaf
    assert cg.read_usage(layout, "/shoal/pod/c") is None  # not there yet
    _write(leaf / "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    _write(leaf / "memory.current", "10000\n")
    _write(leaf / "memory.stat", "anon 100\ninactive_file 4000\nactive_file 1\n")
    _write(leaf / "memory.max", "max\n")
    _write(leaf / "pids.current", "3\n")
    _write(leaf / "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    usage = cg.read_usage(layout, "/shoal/pod/c")
    assert usage == cg.Usage(
        cpu_usage_nanos=1_500_000, memory_bytes=6000, memory_limit_bytes=None, pids=3
    )
    _write(leaf / "memory.max", "1048576\n")
    assert cg.read_usage(layout, "/shoal/pod/c").memory_limit_bytes == 1048576  # type: ignore[union-attr]
    assert cg.oom_kills(layout, "/shoal/pod/c") == 1
    assert cg.children(layout, "/shoal", 1) == {"/shoal/pod"}
    assert cg.children(layout, "/shoal", 2) == {"/shoal/pod/c"}


def test_v1_usage_on_temp_hierarchies(tmp_path: Path) -> None:
    layout = cg.CgroupLayout(
        version=1,
        controllers={"cpuacct": tmp_path / "cpuacct", "memory": tmp_path / "memory"},
        hierarchies=(tmp_path / "cpuacct", tmp_path / "memory"),
    )
    _write(tmp_path / "cpuacct/s/p/c/cpuacct.usage", "123456789\n")
    mem = tmp_path / "memory/s/p/c"
    _write(mem / "memory.usage_in_bytes", "5000\n")
    _write(mem / "memory.stat", "cache 10\ninactive_file 1\ntotal_inactive_file 1000\n")
    _write(mem / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    usage = cg.read_usage(layout, "/s/p/c")
    assert usage == cg.Usage(123456789, 4000, None, 0)
    assert cg.oom_kills(layout, "/s/p/c") == 2
    assert cg.oom_kills(layout, "/s/p/other") == 0


def test_prune_parents_and_remove(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    layout = cg.CgroupLayout(version=1, hierarchies=(a, b))
    (a / "shoal/pod1").mkdir(parents=True)
    (a / "shoal/pod2/c").mkdir(parents=True)
    (b / "shoal/pod1").mkdir(parents=True)
    cg.prune_parents(layout, "/shoal/pod1/c", "/shoal")
    assert not (a / "shoal/pod1").exists() and (a / "shoal/pod2/c").exists()
    assert not (b / "shoal").exists()  # b's tree was empty all the way up
    assert cg.remove_cgroup(a / "shoal", kill=False)
    assert not (a / "shoal").exists()


def test_mountinfo_helpers() -> None:
    found = rfs.mounts_under(Path("/sys/fs/cgroup"), HYBRID_MOUNTINFO)
    assert found[-1] == Path("/sys/fs/cgroup")  # deepest first, the root itself last
    assert Path("/sys/fs/cgroup/memory") in found
    assert rfs.mounts_under(Path("/srv/my dir"), HYBRID_MOUNTINFO) == [Path("/srv/my dir")]
    assert rfs.mounts_under(Path("/sys/fs/cgroup/mem"), HYBRID_MOUNTINFO) == []


def test_sandbox_layout_mirrors_host_symlinks(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "usr/bin").mkdir(parents=True)
    (host / "etc").mkdir()
    (host / "lib64").mkdir()
    (host / "bin").symlink_to("usr/bin")
    rootfs = tmp_path / "rootfs"
    binds = rfs.prepare_sandbox(rootfs, host_root=host)
    assert binds == [
        (str(host / "usr"), "/usr"),
        (str(host / "etc"), "/etc"),
        (str(host / "lib64"), "/lib64"),
    ]
    assert os.readlink(rootfs / "bin") == "usr/bin"
    assert rfs.prepare_sandbox(rootfs, host_root=host) == binds  # idempotent


def test_read_rootfs_file_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (tmp_path / "etc/passwd").symlink_to(secret)
    assert rfs.read_rootfs_file(tmp_path, "etc/passwd") is None
    (tmp_path / "etc/group").write_text("g:x:1:\n")
    assert rfs.read_rootfs_file(tmp_path, "etc/group") == "g:x:1:\n"
    assert rfs.read_rootfs_file(tmp_path, "etc/missing") is None


def test_metadata_round_trip() -> None:
    c = Container(
        container_id="uid_app",
        pod_uid="uid",
        name="app",
        pod_name="web",
        namespace="ns",
        attempt=2,
        runc_id=runc_id_for("uid_app"),
        log_path=Path("/l/uid/app/2.log"),
        cgroup_path="/shoal/uid/app",
        image="busybox",
        host_ports={80: 31000},
        state="exited",
        pid=42,
        exit_code=137,
        reason="OOMKilled",
    )
    back = Container.from_state(c.to_state())
    assert back.status() == c.status()
    assert back.cgroup_path == c.cgroup_path and back.runc_id == c.runc_id
    assert len(c.runc_id) == 16 and runc_id_for("uid_app") == c.runc_id
    assert runc_id_for("uid_other") != c.runc_id

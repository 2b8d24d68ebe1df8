"""RuncDriver root filesystems: overlay over image layers, the host sandbox, volumes, users."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from shoal.runtime import Mount, SecurityConfig
from shoal.runtime.runc import _rootfs as rfs
from tests.integration.runtime.conftest import (
    DirImages,
    DriverFactory,
    config,
    run_to_exit,
    sh,
)


def _overlay_options(target: Path) -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target) and " - overlay " in line:
            return line.split(" - ", 1)[1]
    raise AssertionError(f"no overlay mounted at {target}")


async def test_overlay_shares_layers_and_copies_nothing(
    make_driver: DriverFactory, images: DirImages, busybox_root: Path
) -> None:
    d = make_driver()
    pod = uuid.uuid4().hex[:12]
    a = config(["sleep", "30"], name="a", pod_uid=pod)
    b = config(["sleep", "30"], name="b", pod_uid=pod)
    await d.start(a)
    await d.start(b)
    bundles = [d.bundles_dir / d._containers[c.container_id].runc_id for c in (a, b)]
    for bundle in bundles:
        assert list((bundle / "upper").iterdir()) == []  # nothing copied up
        assert f"lowerdir={busybox_root}," in _overlay_options(bundle / "rootfs")
    assert images.resolved.count("test/busybox:1") == 2


def _host_facts(marker: str) -> tuple[str, bool, bool]:
    first = Path("/etc/os-release").read_text().splitlines()[0]
    return first, Path("/tmp", marker).exists(), Path("/bin").is_symlink()


async def test_host_sandbox(make_driver: DriverFactory, tmp_path: Path) -> None:
    d = make_driver()
    marker = f"shoal-sandbox-{uuid.uuid4().hex[:8]}"
    script = (
        "cat /etc/os-release | head -1; "
        "touch /usr/x 2>/dev/null && echo usr-writable || echo usr-ro; "
        f"touch /tmp/{marker} && ls /tmp; "
        "readlink /bin; "
        "python3 -c 'print(6 * 7)'; "
        "echo host=$(cat /etc/hostname)"
    )
    status, text = await run_to_exit(d, config(sh(script), image="", pod_name="sbx"))
    assert status.exit_code == 0, text
    os_release, leaked, bin_is_link = _host_facts(marker)
    assert text.splitlines()[0] == os_release
    assert "usr-ro" in text
    assert marker in text
    assert not leaked  # the container's /tmp is its own tmpfs
    if bin_is_link:
        assert "usr/bin" in text
    assert "42" in text.splitlines()
    assert "host=sbx" in text


async def test_volumes_shared_and_read_only(make_driver: DriverFactory, tmp_path: Path) -> None:
    d = make_driver()
    pod = uuid.uuid4().hex[:12]
    shared = tmp_path / "empty-dir"
    shared.mkdir()
    host_path = tmp_path / "host-path"
    host_path.mkdir()
    (host_path / "config.txt").write_text("from the host\n")
    writer = config(
        sh("echo hello > /shared/note && echo wrote"),
        name="writer",
        pod_uid=pod,
        mounts=[Mount(shared, "/shared")],
    )
    status, text = await run_to_exit(d, writer)
    assert status.exit_code == 0, text
    reader = config(
        sh(
            "cat /shared/note; cat /cfg/config.txt; echo x > /cfg/new && echo WROTE || echo refused"
        ),
        name="reader",
        pod_uid=pod,
        mounts=[Mount(shared, "/shared"), Mount(host_path, "/cfg", read_only=True)],
    )
    status, text = await run_to_exit(d, reader)
    assert text.splitlines() == [
        "hello",
        "from the host",
        "sh: can't create /cfg/new: Read-only file system",
        "refused",
    ]
    assert (shared / "note").read_text() == "hello\n"
    assert not (host_path / "new").exists()


async def test_run_as_user_and_image_user(make_driver: DriverFactory) -> None:
    d = make_driver()
    status, text = await run_to_exit(
        d,
        config(["id"], security=SecurityConfig(run_as_user=1000, run_as_group=50)),
    )
    assert text.strip().startswith("uid=1000(app) gid=50(staff)"), text
    # The image says USER app: uid, primary group and supplementary groups from its files.
    status, text = await run_to_exit(
        d, config(image="test/busybox-app:1", args=["id; pwd; echo $HOME"])
    )
    assert status.exit_code == 0, text
    lines = text.splitlines()
    assert lines[0] == "uid=1000(app) gid=1000(app) groups=50(staff)"
    assert lines[1:] == ["/home/app", "/home/app"]
    # No command and no args: the image's ENTRYPOINT + CMD ("sh -c id").
    status, text = await run_to_exit(d, config(image="test/busybox-app:1"))
    assert text.startswith("uid=1000(app)")
    # exec runs as the container's process does: same user, cwd and env.
    long = config(["sleep", "30"], security=SecurityConfig(run_as_user=1000), working_dir="/tmp")
    await d.start(long)
    proc = await d.exec(long.container_id, ["sh", "-c", "id -u; pwd; echo $SHOAL_POD_NAME"])
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert out.decode().splitlines() == ["1000", "/tmp", "web-1"]


async def test_read_only_root_filesystem(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(
        sh("touch /x 2>/dev/null && echo root-writable || echo root-ro; cat /etc/hostname"),
        pod_name="ro-pod",
        security=SecurityConfig(read_only_root_filesystem=True),
    )
    _status, text = await run_to_exit(d, cfg)
    assert text.splitlines() == ["root-ro", "ro-pod"]
    _rw, text = await run_to_exit(d, config(sh("touch /x && echo root-writable")))
    assert "root-writable" in text


async def test_security_defaults_and_privileged(make_driver: DriverFactory) -> None:
    d = make_driver()
    probe = sh(
        "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; "
        "cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable || echo kcore-masked"
    )
    _, text = await run_to_exit(d, config(probe))
    cap_eff = int(text.split()[1], 16)
    assert cap_eff == 0xA80425FB  # Docker's 14 default capabilities
    assert "NoNewPrivs:\t1" in text
    assert "kcore-masked" in text
    _status, text = await run_to_exit(d, config(probe, security=SecurityConfig(privileged=True)))
    assert int(text.split()[1], 16) > 0xA80425FB
    assert "NoNewPrivs:\t0" in text


async def test_dns_and_hosts_files(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(
        sh("cat /etc/resolv.conf; grep dns-pod /etc/hosts"),
        pod_name="dns-pod",
        dns_nameservers=["10.0.0.10"],
        dns_searches=["default.svc.cluster.local"],
        dns_options=["ndots:5"],
    )
    _status, text = await run_to_exit(d, cfg)
    assert text.splitlines() == [
        "nameserver 10.0.0.10",
        "search default.svc.cluster.local",
        "options ndots:5",
        "127.0.1.1\tdns-pod",
    ]
    # runc made its bind mounts inside the container: the host sees only the overlay root.
    rootfs = d.bundles_dir / d._containers[cfg.container_id].runc_id / "rootfs"
    assert rfs.mounts_under(d.root) == [rootfs]

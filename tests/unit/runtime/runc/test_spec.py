"""The pure parts of the runc driver: Kubernetes' merge rules, users, cgroup numbers, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.errors import DriverError
from shoal.runtime import ContainerConfig, Mount, PortRequest, SecurityConfig
from shoal.runtime.images import ImageConfig
from shoal.runtime.runc import _spec as sp

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\nbad line\n"
GROUP = "root:x:0:\nstaff:x:50:app,other\napp:x:1001:\nwheel:x:10:other\n"


def cfg(**kw: Any) -> ContainerConfig:
    base: dict[str, Any] = {
        "pod_uid": "uid1",
        "pod_name": "web-1",
        "namespace": "ns",
        "name": "c",
        "attempt": 0,
    }
    base.update(kw)
    return ContainerConfig(**base)


IMG = ImageConfig(entrypoint=["/entry"], cmd=["--serve"], env=["PATH=/img/bin", "A=img"])


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/entry", "--serve"]),
        (["/bin/x"], [], ["/bin/x"]),  # command drops CMD
        (["/bin/x"], ["-v"], ["/bin/x", "-v"]),
        ([], ["--other"], ["/entry", "--other"]),  # args alone replace CMD
    ],
)
def test_merge_argv_kubernetes_rules(
    command: list[str], args: list[str], expected: list[str]
) -> None:
    assert sp.merge_argv(cfg(command=command, args=args), IMG) == expected


def test_nothing_to_run_is_a_clear_error() -> None:
    with pytest.raises(DriverError, match=r"'c' of pod ns/web-1: nothing to run.*busybox"):
        sp.merge_argv(cfg(image="busybox"), ImageConfig())
    with pytest.raises(DriverError, match="nothing to run"):
        sp.merge_argv(cfg(), None)
    assert sp.merge_argv(cfg(args=["x"]), ImageConfig(cmd=["y"])) == ["x"]


def test_env_order_image_then_identity_then_spec() -> None:
    config = cfg(
        ports=[PortRequest(80, "http"), PortRequest(9100, "node-metrics")],
        env={"A": "spec", "SHOAL_POD_NAME": "override"},
    )
    identity = sp.identity_env(config, "web-1", {80: 31000, 9100: 31001}, "10.0.0.1")
    env = sp.merge_env(IMG.env, identity, config.env)
    assert env["PATH"] == "/img/bin"
    assert env["A"] == "spec"
    assert env["SHOAL_POD_NAME"] == "override"
    assert env["HOSTNAME"] == "web-1"
    assert env["PORT"] == "31000"
    assert env["SHOAL_PORT_HTTP"] == "31000"
    assert env["SHOAL_PORT_NODE_METRICS"] == "31001"
    assert env["SHOAL_HOST_IP"] == "10.0.0.1"
    assert sp.merge_env(["NOVALUE"], {}, {})["PATH"].startswith("/usr/local/sbin")
    assert sp.merge_env(["NOVALUE"], {}, {})["NOVALUE"] == ""


def test_working_dir() -> None:
    assert sp.working_dir(cfg(), None) == "/"
    assert sp.working_dir(cfg(), ImageConfig(working_dir="/app")) == "/app"
    assert sp.working_dir(cfg(working_dir="/w"), ImageConfig(working_dir="/app")) == "/w"
    with pytest.raises(DriverError, match="workingDir 'rel'"):
        sp.working_dir(cfg(working_dir="rel"), None)


@pytest.mark.parametrize(
    ("security", "image_user", "expected"),
    [
        (SecurityConfig(), "", sp.User(0, 0, (), "/root")),
        (SecurityConfig(), "app", sp.User(1000, 1001, (50,), "/home/app")),
        (SecurityConfig(), "app:staff", sp.User(1000, 50, (), "/home/app")),
        (SecurityConfig(), "1000:7", sp.User(1000, 7, (50,), "/home/app")),
        (SecurityConfig(), "4242", sp.User(4242, 0, (), "/")),
        (SecurityConfig(run_as_user=1000), "", sp.User(1000, 1001, (50,), "/home/app")),
        (SecurityConfig(run_as_user=5, run_as_group=6), "app", sp.User(5, 6, (), "/")),
        (SecurityConfig(run_as_group=6), "app:staff", sp.User(1000, 6, (50,), "/home/app")),
    ],
)
def test_resolve_user(security: SecurityConfig, image_user: str, expected: sp.User) -> None:
    assert sp.resolve_user(security, image_user, PASSWD, GROUP) == expected


def test_unknown_user_or_group_names_the_problem() -> None:
    with pytest.raises(DriverError, match="user 'nobody' not in /etc/passwd"):
        sp.resolve_user(SecurityConfig(), "nobody", PASSWD, GROUP)
    with pytest.raises(DriverError, match="group 'nogroup' not in /etc/group"):
        sp.resolve_user(SecurityConfig(), "app:nogroup", PASSWD, GROUP)
    with pytest.raises(DriverError, match="no /etc/passwd in the image"):
        sp.resolve_user(SecurityConfig(), "app", None, None)


def test_cgroup_numbers() -> None:
    assert sp.cpu_shares(None) == 2
    assert sp.cpu_shares(1) == 2
    assert sp.cpu_shares(500) == 512
    assert sp.cpu_shares(2000) == 2048
    assert sp.cpu_quota(None) is None
    assert sp.cpu_quota(250) == 25_000
    assert sp.cpu_quota(1) == 1000  # the kernel's minimum
    res = sp.resources(
        cfg(cpu_limit_millis=1500, cpu_request_millis=100, memory_limit_bytes=1 << 20), 99
    )
    assert res["cpu"] == {"shares": 102, "quota": 150_000, "period": 100_000}
    assert res["memory"] == {"limit": 1 << 20, "swap": 1 << 20}
    assert res["pids"] == {"limit": 99}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]
    assert sp.resources(cfg(pids_limit=7), 99)["pids"] == {"limit": 7}
    assert "memory" not in sp.resources(cfg(), 99)


def test_check_names() -> None:
    assert sp.check_cgroup_parent("/shoal/agents/") == "/shoal/agents"
    for bad in ("shoal", "/", "/a/../b", "/a b"):
        with pytest.raises(DriverError, match="cgroup_parent"):
            sp.check_cgroup_parent(bad)
    with pytest.raises(DriverError, match="pod uid"):
        sp.check_safe("pod uid", "../etc")


def _spec(**kw: Any) -> sp.BundleSpec:
    base: dict[str, Any] = {
        "argv": ["sh"],
        "env": {"PATH": "/bin"},
        "cwd": "/",
        "user": sp.User(1000, 1000, (50,), "/home/app"),
        "hostname": "web-1",
        "cgroups_path": "/shoal/uid1/c",
        "resources": {},
    }
    base.update(kw)
    return sp.BundleSpec(**base)


def test_build_config_defaults_are_dockers() -> None:
    config = sp.build_config(_spec())
    proc = config["process"]
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [50]}
    assert "HOME=/home/app" in proc["env"]
    assert proc["noNewPrivileges"] is True
    assert proc["terminal"] is False
    assert sorted(proc["capabilities"]["bounding"]) == sorted(sp.DEFAULT_CAPABILITIES)
    assert len(sp.DEFAULT_CAPABILITIES) == 14
    assert config["linux"]["maskedPaths"] == list(sp.MASKED_PATHS)
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    assert [n["type"] for n in config["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert config["linux"]["cgroupsPath"] == "/shoal/uid1/c"
    assert config["hostname"] == "web-1"
    dests = [m["destination"] for m in config["mounts"]]
    assert dests == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert "ro" in config["mounts"][5]["options"]
    assert config["root"] == {"path": "rootfs", "readonly": False}


def test_build_config_privileged_netns_and_mounts() -> None:
    vol = Mount(source=Path("/v"), destination="/data", read_only=True)
    config = sp.build_config(
        _spec(
            privileged=True,
            network_namespace="/var/run/netns/p1",
            readonly_root=True,
            env={"HOME": "/custom"},
            mounts=[sp.bind_mount(str(vol.source), vol.destination, read_only=vol.read_only)],
            bounding_caps=sp.ALL_CAPS_MASK & ~(1 << 24),
        )
    )
    caps = config["process"]["capabilities"]["effective"]
    assert "CAP_SYS_ADMIN" in caps and "CAP_SYS_RESOURCE" not in caps
    assert len(caps) == len(sp.CAP_NAMES) - 1
    assert config["process"]["noNewPrivileges"] is False
    assert "maskedPaths" not in config["linux"]
    assert {"type": "network", "path": "/var/run/netns/p1"} in config["linux"]["namespaces"]
    assert "HOME=/custom" in config["process"]["env"]
    assert config["mounts"][-1] == {
        "destination": "/data",
        "type": "bind",
        "source": "/v",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert config["root"]["readonly"] is True


def test_capabilities_follow_the_bounding_set() -> None:
    no_net_raw = sp.ALL_CAPS_MASK & ~(1 << sp.CAP_NAMES.index("CAP_NET_RAW"))
    assert "CAP_NET_RAW" not in sp.capabilities(privileged=False, bounding_mask=no_net_raw)
    assert len(sp.capabilities(privileged=False, bounding_mask=no_net_raw)) == 13


def test_pod_files() -> None:
    assert sp.pod_hostname(cfg(hostname="custom")) == "custom"
    assert sp.pod_hostname(cfg(pod_name="a" * 62 + "-xyz")) == "a" * 62
    assert "127.0.1.1\tweb-1\n" in sp.hosts_file("web-1")
    assert sp.resolv_conf([], ["x"], []) is None
    assert sp.resolv_conf(["1.1.1.1", "8.8.8.8"], ["a.b", "c"], ["ndots:2"]) == (
        "nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.b c\noptions ndots:2\n"
    )


def test_public_names_are_pinned() -> None:
    import shoal.runtime.runc as runc_pkg

    assert set(runc_pkg.__all__) == {"ExitHook", "RuncDriver", "runc_unavailable_reason"}
    assert runc_pkg.RuncDriver.name == "runc"
    assert runc_pkg.runc_unavailable_reason("no-such-runc-binary") is not None

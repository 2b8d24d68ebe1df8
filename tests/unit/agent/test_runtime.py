"""Runtime selection: which driver (and image service) an AgentConfig builds, the default
runtime, and how the Node advertises it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import __version__
from shoal.agent import AgentConfig, default_runtime
from shoal.agent._node import runtime_version
from shoal.agent._runtime import build_runtime
from shoal.errors import ConfigError
from shoal.runtime import Fingerprint, ProcessDriver
from shoal.runtime.images import ImageService
from shoal.runtime.runc import RuncDriver, runc_unavailable_reason
from tests.rootreq import require_root


def test_process_runtime_has_no_images(tmp_path: Path) -> None:
    rt = build_runtime(AgentConfig("n", data_dir=tmp_path))
    assert isinstance(rt.driver, ProcessDriver) and rt.images is None
    assert rt.driver.log_dir == tmp_path / "logs"


def test_unknown_runtime_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match='unknown runtime "docker": this agent can run "process", "runc"'
    ):
        build_runtime(AgentConfig("n", data_dir=tmp_path, runtime="docker"))


async def test_runc_runtime_builds_driver_and_image_service(tmp_path: Path) -> None:
    require_root("runc")
    cfg = AgentConfig("node-x", data_dir=tmp_path, runtime="runc",
                      cgroup_parent="/shoal-test-rt", insecure_registries=("reg:5000",))  # fmt: skip
    rt = build_runtime(cfg)
    try:
        assert isinstance(rt.driver, RuncDriver)
        assert isinstance(rt.images, ImageService) and rt.image_service is rt.images
        assert rt.driver.root == (tmp_path / "runc").resolve()
        assert rt.driver.log_dir == tmp_path / "logs"
        assert rt.driver.cgroup_parent == "/shoal-test-rt"
        assert rt.images.store.root == tmp_path / "images"
        assert runtime_version(rt.driver.fingerprint()).startswith("runc://1.")
    finally:
        assert isinstance(rt.driver, RuncDriver) and rt.image_service is not None
        rt.driver.close()
        await rt.image_service.aclose()


def test_default_runtime_follows_runc_availability() -> None:
    expected = "runc" if runc_unavailable_reason() is None else "process"
    assert default_runtime() == expected


def test_runtime_version() -> None:
    runc = Fingerprint("runc", 1000, 1, {"runc.version": "1.1.5+ds1"})
    assert runtime_version(runc) == "runc://1.1.5+ds1"
    assert runtime_version(Fingerprint("runc", 1000, 1, {"runc.version": "unknown"})) == (
        f"runc://shoal-{__version__}"
    )
    assert runtime_version(Fingerprint("process", 1000, 1)) == f"process://shoal-{__version__}"

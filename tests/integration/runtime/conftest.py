"""Fixtures for the runc driver's tests: a real busybox image root and a driver per test.

The image is a directory built once per module from the host's static busybox (every applet
symlinked, a passwd/group with a non-root user); a tiny ImageProvider hands it to the driver as
a one-layer image. Each driver gets its own root dir and a unique cgroup parent, and teardown
removes everything it may have left -- runc state, mounts, cgroups -- even if the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime import ContainerConfig, ContainerStatus
from shoal.runtime.images import ImageConfig, ImageRecord, ResolvedImage
from shoal.runtime.runc import RuncDriver
from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from tests.rootreq import require_root

IMAGE = "test/busybox:1"
APP_UID = 1000
STAFF_GID = 50


class DirImages:
    """An ImageProvider over plain directories: ``reference -> (layer dirs, config)``."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[list[Path], ImageConfig]] = {}
        self.resolved: list[str] = []

    def add(self, reference: str, layers: list[Path], config: ImageConfig) -> None:
        self.images[reference] = (layers, config)

    def resolve(self, reference: str) -> ResolvedImage:
        from shoal.runtime.images import ImageError

        if reference not in self.images:
            raise ImageError(f"image {reference!r} not found")
        self.resolved.append(reference)
        layers, config = self.images[reference]
        record = ImageRecord(
            id="sha256:" + "0" * 64,
            digest="sha256:" + "1" * 64,
            repo_tags=[reference],
            config=config,
            layers=[],
            size=0,
        )
        return ResolvedImage(record=record, layer_dirs=layers)


def build_busybox_root(root: Path) -> Path:
    """A minimal busybox root filesystem (one overlay lower layer)."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\n")
    for name in ("hostname", "hosts", "resolv.conf"):
        (root / "etc" / name).write_text("")
    return root


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root("runc", "busybox")
    return build_busybox_root(tmp_path_factory.mktemp("bbroot"))


@pytest.fixture
def images(busybox_root: Path) -> DirImages:
    provider = DirImages()
    provider.add(IMAGE, [busybox_root], ImageConfig(cmd=["sh"], env=["PATH=/bin", "IMG=1"]))
    provider.add(
        "test/busybox-app:1",
        [busybox_root],
        ImageConfig(entrypoint=["sh", "-c"], cmd=["id"], user="app", working_dir="/home/app"),
    )
    provider.add("test/busybox-empty:1", [busybox_root], ImageConfig())
    return provider


def cleanup_everything(root: Path, cgroup_parent: str) -> None:
    """Best-effort removal of anything a driver left: runc containers, mounts, cgroups."""
    state = root / "state"
    if state.is_dir():
        out = subprocess.run(
            ["runc", "--root", str(state), "list", "-q"], capture_output=True, text=True
        ).stdout
        for rid in out.split():
            subprocess.run(["runc", "--root", str(state), "delete", "--force", rid], check=False)
    for point in rfs.mounts_under(root):
        with contextlib.suppress(Exception):
            rfs.unmount(point)
    layout = cg.CgroupLayout.detect()
    for d in layout.dirs(cgroup_parent):
        cg.remove_cgroup(d, kill=True)


def leftovers(root: Path, cgroup_parent: str) -> dict[str, Any]:
    """What a driver left behind: runc containers, mounts under root, cgroup dirs."""
    out = subprocess.run(
        ["runc", "--root", str(root / "state"), "list", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    layout = cg.CgroupLayout.detect()
    return {
        "runc": out.split(),
        "mounts": rfs.mounts_under(root),
        "cgroups": [d for d in layout.dirs(cgroup_parent) if d.exists()],
    }


DriverFactory = Callable[..., RuncDriver]


@pytest.fixture
async def make_driver(tmp_path: Path, images: DirImages) -> AsyncIterator[DriverFactory]:
    """Build drivers sharing one root and one unique cgroup parent (so a test can restart
    one); every container is stopped and removed and all leftovers swept at teardown."""
    require_root("runc", "busybox")
    root = tmp_path / "r"
    parent = f"/shoal-test-{uuid.uuid4().hex[:10]}"
    made: list[RuncDriver] = []

    def factory(**kw: Any) -> RuncDriver:
        kw.setdefault("images", images)
        kw.setdefault("cgroup_parent", parent)
        kw.setdefault("kill_timeout", 3.0)
        d = RuncDriver(root, **kw)
        made.append(d)
        return d

    try:
        yield factory
    finally:
        # Earlier drivers of a test were closed (an agent restart): only the last one's view
        # is current. Whatever it does not know is swept by cleanup_everything.
        if made:
            last = made[-1]
            for status in await last.list():
                with contextlib.suppress(Exception):
                    await last.stop(status.container_id, 0)
                with contextlib.suppress(Exception):
                    await last.remove(status.container_id)
        for d in made:
            d.close()
        cleanup_everything(root, parent)


def config(
    command: list[str] | None = None,
    *,
    name: str = "app",
    pod_uid: str | None = None,
    pod_name: str = "web-1",
    image: str = IMAGE,
    attempt: int = 0,
    **kw: Any,
) -> ContainerConfig:
    return ContainerConfig(
        pod_uid=pod_uid or uuid.uuid4().hex[:12],
        pod_name=pod_name,
        namespace="default",
        name=name,
        attempt=attempt,
        image=image,
        command=command or [],
        **kw,
    )


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


async def wait_exited(driver: RuncDriver, cid: str, timeout: float = 10.0) -> ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await driver.inspect(cid)
        if status.state == "exited":
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{cid} still {status.state} after {timeout}s")
        await asyncio.sleep(0.02)


async def run_to_exit(
    driver: RuncDriver, cfg: ContainerConfig, timeout: float = 10.0
) -> tuple[ContainerStatus, str]:
    """Start, wait for the exit, return the final status and the log text."""
    await driver.start(cfg)
    status = await wait_exited(driver, cfg.container_id, timeout)
    text = driver.log_path(cfg.container_id, cfg.attempt).read_text()
    return status, text


def host_cgroup_file(cgroup_path: str, controller: str, name: str) -> str:
    layout = cg.CgroupLayout.detect()
    d = layout.dir_for(controller, cgroup_path)
    assert d is not None
    return (d / name).read_text().strip()

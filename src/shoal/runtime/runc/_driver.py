"""The ``runc`` driver: each container is an OCI container run by the runc CLI.

Python writes the bundle (``config.json`` from ``_spec``, the root filesystem from
``_rootfs``) and drives ``runc create``/``start``/``kill``/``delete``; runc does the
namespaces and cgroups. Habits shared with the process driver, and why:

* The container's stdout/stderr is the attempt's log file opened ``O_APPEND`` (never a pipe):
  the container keeps logging while the agent is down, and logs are capped by copytruncate.
* The agent is a child subreaper, so each container's init becomes its child when
  ``runc create`` exits. Its exit is noticed through a pidfd on the event loop and reaped with
  ``waitpid(pid, WNOHANG)`` -- only pids we track, never ``waitpid(-1)``, which would steal
  asyncio's subprocesses -- giving real exit codes. ``OOMKilled`` comes from the memory
  cgroup's ``oom_kill`` counter, read before ``runc delete`` removes the cgroup.
* ``meta.json`` in each bundle lets a restarted agent adopt running containers (same pid)
  and sweep whatever belongs to no container: runc state, mounts, bundles, cgroups.

Layout under ``root``: ``state/`` (``runc --root``), ``bundles/<runc id>/`` (config.json,
meta.json, rootfs mount point, overlay upper/ and work/), ``pods/<pod uid>/`` (hostname,
hosts and resolv.conf shared by the pod's containers), ``logs/`` unless ``log_dir`` is given.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shoal._util import Clock, SystemClock
from shoal.errors import DriverError, ShoalError
from shoal.runtime import _procutil as pu
from shoal.runtime._common import DriverBase, ExitHook
from shoal.runtime._protocol import (
    ContainerConfig,
    ContainerStats,
    ContainerStatus,
    Driver,
    Fingerprint,
)
from shoal.runtime.images._model import ImageProvider, ResolvedImage
from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from shoal.runtime.runc import _spec as sp
from shoal.runtime.runc._bundle import BundleInputs, bounding_caps, unmount_all, write_bundle
from shoal.runtime.runc._runc import Runc, become_subreaper, runc_version
from shoal.runtime.runc._state import META_FILE, Container, runc_id_for

__all__ = ["ExitHook", "RuncDriver"]

log = logging.getLogger(__name__)


class RuncDriver(DriverBase[Container]):
    """Runs containers with runc. See the module docstring for the design."""

    name = "runc"

    def __init__(
        self,
        root: Path,
        *,
        images: ImageProvider | None,
        cgroup_parent: str = "/shoal",
        log_dir: Path | None = None,
        log_max_bytes: int = 10 * 1024 * 1024,
        on_exit: ExitHook | None = None,
        host_ip: str = "127.0.0.1",
        clock: Clock | None = None,
        runc: str = "runc",
        default_pids_limit: int = 4096,
        kill_timeout: float = 5.0,
    ) -> None:
        """``cgroup_parent`` must be distinct per agent on one machine: recover() removes
        any cgroup under it that belongs to none of this driver's containers."""
        self.root = Path(root).resolve()
        self.state_dir = self.root / "state"
        self.bundles_dir = self.root / "bundles"
        self.pods_dir = self.root / "pods"
        self.log_dir = Path(log_dir) if log_dir is not None else self.root / "logs"
        self.log_max_bytes = log_max_bytes
        self.on_exit = on_exit
        self.host_ip = host_ip
        self.cgroup_parent = sp.check_cgroup_parent(cgroup_parent)
        self._cgroup_top = "/" + self.cgroup_parent.strip("/").split("/")[0]
        """The first component (``/shoal`` of ``/shoal/<node>``): pruned too when empty, so
        the last agent on the machine leaves no trace; other agents' nodes keep it busy."""
        self._images = images
        self._clock: Clock = clock or SystemClock()
        self._runc_binary = runc
        self._runc = Runc(runc, self.state_dir)
        self._default_pids_limit = default_pids_limit
        self._kill_timeout = kill_timeout
        self._cgroups = cg.CgroupLayout.detect()
        self._containers: dict[str, Container] = {}
        self._starting: set[str] = set()
        self._names: dict[str, tuple[str, str]] = {}
        self._version: str | None = None
        self._bounding_caps = bounding_caps()
        for d in (self.state_dir, self.bundles_dir, self.pods_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        become_subreaper()

    # --- Driver protocol ---------------------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        if self._version is None:
            self._version = runc_version(self._runc_binary)
        return Fingerprint(
            driver=self.name,
            cpu_millis=(os.cpu_count() or 1) * 1000,
            memory_bytes=pu.host_memory_bytes(),
            attributes={
                "os": "linux",
                "arch": platform.machine(),
                "driver.runc": "1",
                "runc.version": self._version or "unknown",
                "cgroup.version": str(self._cgroups.version),
            },
        )

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        pu.check_safe("pod uid", config.pod_uid)
        pu.check_safe("container name", config.name)
        cid = config.container_id
        where = f"container {config.name!r} of pod {config.namespace}/{config.pod_name}"
        previous = self._containers.get(cid)
        if cid in self._starting or (previous is not None and previous.state != "exited"):
            raise DriverError(f"{where} is already running")
        self._starting.add(cid)
        try:
            resolved = await self._resolve_image(config, where)
            image_cfg = resolved.record.config if resolved else None
            argv = sp.merge_argv(config, image_cfg)
            cwd = sp.working_dir(config, image_cfg)
            self._check_mounts(config, where)
            if previous is not None:
                await self._teardown(previous)
            # Synchronous from here to the insertion: no other start() can take these ports.
            c = self._new_container(config, previous)
            self._containers[cid] = c
            self._names[cid] = (config.pod_uid, config.name)
            try:
                await self._create_and_start(c, config, resolved, argv, cwd, where)
            except BaseException:
                await asyncio.shield(self._discard(c))
                raise
        finally:
            self._starting.discard(cid)
        log.info("started %s runc=%s pid=%s ports=%s", cid, c.runc_id, c.pid, c.host_ports)
        return c.status()

    async def stop(self, container_id: str, grace_period: float) -> ContainerStatus:
        c = self._get(container_id)
        if c.state != "running":
            return c.status()
        with contextlib.suppress(DriverError):  # already exiting: the wait below sees it
            await self._runc.kill(c.runc_id, "TERM")
        try:
            await asyncio.wait_for(c.exited.wait(), timeout=max(grace_period, 0.0))
        except TimeoutError:
            log.info("%s ignored SIGTERM for %.1fs; sending SIGKILL", container_id, grace_period)
            with contextlib.suppress(DriverError):
                await self._runc.kill(c.runc_id, "KILL")
            try:
                await asyncio.wait_for(c.exited.wait(), timeout=self._kill_timeout)
            except TimeoutError:
                self._check_exit(c)
                if c.state == "running":
                    raise DriverError(
                        f"container {container_id} (pid {c.pid}) did not exit "
                        f"{self._kill_timeout:.0f}s after SIGKILL"
                    ) from None
        return c.status()

    async def remove(self, container_id: str) -> None:
        c = self._containers.get(container_id)
        if c is None:
            return
        if c.state != "exited":
            raise DriverError(f"container {container_id} is {c.state}; stop it before removing")
        await self._discard(c)

    async def recover(self) -> builtins.list[ContainerStatus]:
        runc_states = {str(d.get("id")): d for d in await self._runc.list()}
        for meta in sorted(self.bundles_dir.glob(f"*/{META_FILE}")):
            data = pu.read_json(meta)
            try:
                if data is None:
                    raise ValueError("not a JSON object")
                c = Container.from_state(data)
                pu.check_safe("pod uid", c.pod_uid)
                pu.check_safe("container name", c.name)
                if meta.parent.name != c.runc_id:
                    raise ValueError(f"runc id {c.runc_id!r} does not match its directory")
            except (KeyError, TypeError, ValueError, DriverError) as exc:
                log.warning("ignoring unreadable container metadata %s: %s", meta, exc)
                continue
            if c.container_id in self._containers:
                continue
            self._containers[c.container_id] = c
            self._names[c.container_id] = (c.pod_uid, c.name)
            entry = runc_states.get(c.runc_id) or {}
            if c.state == "exited":
                c.exited.set()
                continue
            if entry.get("status") == "running":
                runc_pid = entry.get("pid")
                if isinstance(runc_pid, int) and runc_pid > 0 and runc_pid != c.pid:
                    # The agent died between `runc create` and saving the pid.
                    c.pid, c.start_ticks = runc_pid, pu.proc_start_ticks(runc_pid)
                if c.pid is not None and pu.is_running(c.pid, c.start_ticks):
                    log.info("adopted %s pid=%d", c.container_id, c.pid)
                    c.state = "running"
                    self._save(c)
                    self._watch(c)
                    continue
            if entry.get("status") == "created":  # start never completed; its init waits
                await self._runc.delete(c.runc_id)
            # Exited while nobody watched: the status is lost unless it is our zombie child.
            c.state = "running"
            self._reap(c, notify=False)
            if not c.exited.is_set():
                self._watch(c)
        await self._sweep(set(runc_states))
        return [c.status() for c in self._containers.values()]

    async def exec(
        self, container_id: str, command: builtins.list[str]
    ) -> asyncio.subprocess.Process:
        c = self._get(container_id)
        if c.state != "running":
            raise DriverError(f"container {container_id} is not running")
        if not command:
            raise DriverError(f"exec in {container_id}: empty command")
        return await self._runc.exec(c.runc_id, command)

    async def stats(self, container_id: str) -> ContainerStats:
        c = self._get(container_id)
        if c.state != "running":
            raise DriverError(f"container {container_id} is not running")
        usage = cg.read_usage(self._cgroups, c.cgroup_path)
        if usage is None:
            raise DriverError(f"container {container_id}: cgroup {c.cgroup_path} is gone")
        return ContainerStats(
            container_id=container_id,
            timestamp=self._clock.now(),
            cpu_usage_nanos=usage.cpu_usage_nanos,
            memory_bytes=usage.memory_bytes,
            memory_limit_bytes=usage.memory_limit_bytes,
            pids=usage.pids,
        )

    # --- starting ----------------------------------------------------------------------------

    async def _resolve_image(self, config: ContainerConfig, where: str) -> ResolvedImage | None:
        if not config.image:
            return None
        if self._images is None:
            raise DriverError(f"{where}: image {config.image!r} given but no image store is set")
        try:
            return await asyncio.to_thread(self._images.resolve, config.image)
        except ShoalError as exc:
            raise DriverError(f"{where}: image {config.image!r}: {exc}") from exc

    @staticmethod
    def _check_mounts(config: ContainerConfig, where: str) -> None:
        for i, m in enumerate(config.mounts):
            if not m.destination.startswith("/") or ".." in m.destination.split("/"):
                raise DriverError(
                    f"{where}: mounts[{i}].destination {m.destination!r} must be an absolute "
                    "path without '..'"
                )
            if not Path(m.source).is_absolute() or not Path(m.source).exists():
                raise DriverError(
                    f"{where}: mounts[{i}].source {str(m.source)!r} does not exist on the host"
                )

    def _new_container(self, config: ContainerConfig, previous: Container | None) -> Container:
        if config.network_namespace:
            # Its own network namespace: every port is its own, nothing to share on the host.
            host_ports = {p.container_port: p.container_port for p in config.ports}
        else:
            host_ports = self._assign_ports(
                config.container_id, config.ports, previous, _holds_ports
            )
        runc_id = runc_id_for(config.container_id)
        return Container(
            container_id=config.container_id,
            pod_uid=config.pod_uid,
            name=config.name,
            pod_name=config.pod_name,
            namespace=config.namespace,
            attempt=config.attempt,
            runc_id=runc_id,
            log_path=self.log_dir / config.pod_uid / config.name / f"{config.attempt}.log",
            cgroup_path=f"{self.cgroup_parent}/{config.pod_uid}/{config.name}",
            image=config.image,
            host_ports=host_ports,
            state="created",
        )

    async def _create_and_start(
        self,
        c: Container,
        config: ContainerConfig,
        resolved: ResolvedImage | None,
        argv: builtins.list[str],
        cwd: str,
        where: str,
    ) -> None:
        """Prepare the bundle, ``runc run --detach``, then watch the init's pid."""
        bundle = self.bundles_dir / c.runc_id
        inputs = BundleInputs(
            argv=argv,
            cwd=cwd,
            where=where,
            cgroup_path=c.cgroup_path,
            host_ports=c.host_ports,
            host_ip=self.host_ip,
            default_pids_limit=self._default_pids_limit,
            bounding_caps=self._bounding_caps,
        )

        def prepare_bundle() -> None:
            """Root filesystem, pod files and config.json (file work: run in a thread)."""
            if bundle.exists():  # left by a crash: never delete through a live mount
                unmount_all(bundle)
                shutil.rmtree(bundle, ignore_errors=True)
            bundle.mkdir(parents=True)
            write_bundle(bundle, self.pods_dir / config.pod_uid, config, resolved, inputs)
            self._save(c)

        await asyncio.to_thread(prepare_bundle)
        c.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            await self._runc.run_detached(c.runc_id, bundle, bundle / "init.pid", log_fd)
        except DriverError as exc:
            raise DriverError(f"{where}: {exc}") from None
        finally:
            os.close(log_fd)
        c.pid = int((bundle / "init.pid").read_text().strip())
        c.start_ticks = pu.proc_start_ticks(c.pid)
        c.state = "running"
        c.started_at = self._clock.now()
        self._save(c)
        self._watch(c)

    # --- exits -------------------------------------------------------------------------------

    def _watch(self, c: Container) -> None:
        """Be told when ``c``'s init exits: a pidfd registered with the event loop."""
        exc = self._watch_pidfd(c)
        if exc is not None:
            raise exc

    def _check_exit(self, c: Container) -> None:
        if c.state != "running" or c.pid is None:
            self._detach(c)
            return
        if c.pidfd is not None or not pu.is_running(c.pid, c.start_ticks):
            self._reap(c)

    def _reap(self, c: Container, *, notify: bool = True) -> None:
        """Collect the exit status of ``c``'s init (if it has exited) and record it.

        waitpid only succeeds while we are its parent (subreaper); an init adopted from a
        previous agent process has another parent, so its exit code is unknown (None).
        """
        code: int | None = None
        if c.pid is not None:
            try:
                pid, status = os.waitpid(c.pid, os.WNOHANG)
            except ChildProcessError:
                if pu.is_running(c.pid, c.start_ticks):
                    return
            else:
                if pid == 0:
                    return  # still running
                code = pu.exit_code_from_returncode(os.waitstatus_to_exitcode(status))
        oom = cg.oom_kills(self._cgroups, c.cgroup_path) > 0
        self._mark_exited(c, code, notify=notify, reason="OOMKilled" if oom else None)

    # --- cleanup -----------------------------------------------------------------------------

    async def _teardown(self, c: Container) -> None:
        """Delete ``c``'s runc container, unmount its root and remove its leaf cgroup."""
        self._detach(c)
        try:
            await self._runc.delete(c.runc_id)
        except DriverError as exc:
            log.warning("runc delete %s: %s", c.runc_id, exc)
        await asyncio.to_thread(self._release, c.runc_id, c.cgroup_path)

    def _release(self, runc_id: str, cgroup_path: str) -> None:
        """Unmount the root and remove the leaf cgroup (if runc left it); may wait briefly for
        killed processes, hence run in a thread."""
        unmount_all(self.bundles_dir / runc_id)
        for d in self._cgroups.dirs(cgroup_path):
            cg.remove_cgroup(d, kill=True)

    async def _discard(self, c: Container) -> None:
        """Everything of ``c`` goes, then the pod's and the parent's now-empty leftovers."""
        await self._teardown(c)
        await asyncio.to_thread(shutil.rmtree, self.bundles_dir / c.runc_id, True)
        if self._containers.get(c.container_id) is c:
            del self._containers[c.container_id]
        if not any(o.pod_uid == c.pod_uid for o in self._containers.values()):
            shutil.rmtree(self.pods_dir / c.pod_uid, ignore_errors=True)
            cg.prune_parents(self._cgroups, c.cgroup_path, f"{self.cgroup_parent}/{c.pod_uid}")
        if not self._containers and not self._starting:
            cg.prune_parents(self._cgroups, self.cgroup_parent, self._cgroup_top)

    async def _sweep(self, runc_ids: set[str]) -> None:
        """Remove what belongs to no known container: runc state, bundles, mounts, cgroups."""
        known = {c.runc_id for c in self._containers.values()}
        for rid in sorted(runc_ids - known):
            log.warning("deleting orphan runc container %s", rid)
            with contextlib.suppress(DriverError):
                await self._runc.delete(rid)
        pods = {c.pod_uid for c in self._containers.values()}
        leaves = {c.cgroup_path for c in self._containers.values()}
        await asyncio.to_thread(self._sweep_files, known, pods, leaves)

    def _sweep_files(self, known: set[str], pods: set[str], leaves: set[str]) -> None:
        """The file-system half of the sweep: bundles, mounts, cgroups, pod files."""
        for bundle in sorted(p for p in self.bundles_dir.iterdir() if p.name not in known):
            log.warning("removing orphan bundle %s", bundle)
            unmount_all(bundle)
            shutil.rmtree(bundle, ignore_errors=True)
        roots = {self.bundles_dir / rid / "rootfs" for rid in known}
        for point in rfs.mounts_under(self.root):
            if point not in roots and point != self.root:
                log.warning("unmounting orphan mount %s", point)
                rfs.unmount(point)
        for path in sorted(cg.children(self._cgroups, self.cgroup_parent, 2)):
            if path not in leaves:
                log.warning("removing orphan cgroup %s", path)
                for d in self._cgroups.dirs(path):
                    cg.remove_cgroup(d, kill=True)
        for path in sorted(cg.children(self._cgroups, self.cgroup_parent, 1)):
            if path.rsplit("/", 1)[-1] not in pods:
                for d in self._cgroups.dirs(path):
                    cg.remove_cgroup(d, kill=True)
        for pod_dir in self.pods_dir.iterdir():
            if pod_dir.name not in pods:
                shutil.rmtree(pod_dir, ignore_errors=True)
        if not known:
            cg.prune_parents(self._cgroups, self.cgroup_parent, self._cgroup_top)

    # --- small helpers -----------------------------------------------------------------------

    def _save(self, c: Container) -> None:
        try:
            pu.write_json_atomic(self.bundles_dir / c.runc_id / META_FILE, c.to_state())
        except OSError as exc:
            log.error("cannot write metadata of %s: %s", c.container_id, exc)


def _holds_ports(c: Container) -> bool:
    """Whether ``c`` holds its host ports (an exited one's are only remembered)."""
    return c.state != "exited"


if TYPE_CHECKING:

    def _satisfies_protocol(driver: RuncDriver) -> Driver:
        """mypy checks here that RuncDriver is a Driver."""
        return driver

"""The ``process`` driver: each container is a plain host process (no root, like raw_exec).

Design choices, and why:

* Each container runs in its own session (``setsid``), so its pid is also its process-group
  id and one ``killpg`` reaches the whole tree it spawned in that group.
* stdout and stderr go straight to a per-attempt log file opened ``O_APPEND`` — never to a
  pipe — so the process keeps running (and logging) while the agent is down or restarting,
  and the log can be capped with copy-then-truncate.
* Exit is noticed through a pidfd registered with the event loop (no thread, no polling);
  periodic polling is only the fallback for kernels without ``pidfd_open``.
* When a container's main process exits, the rest of its process group is killed, as a
  container runtime does when PID 1 of a container exits. For our own children this is done
  while the leader is still an unreaped zombie, which keeps the group id from being reused.
* A small JSON state file per container (pid + /proc start time) lets a restarted agent
  re-adopt what is still running. A pid is only ever signalled after its start time matched,
  so a pid reused by an unrelated process is never touched.
* Nothing is isolated, so of a pod's volume mounts only the working directory is honoured
  (a workingDir under a mountPath runs in the mount's host directory, see
  ``host_working_dir``); the process sees the host's filesystem, not the mounts. ``exec``
  starts another host process with the container's env, cwd and user; ``stats`` sums the
  container's process group from /proc. ``runAsUser``/``runAsGroup`` are honoured when the
  agent is root (refused otherwise); the rest of the securityContext is not.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from shoal._util import Clock, SystemClock
from shoal.errors import DriverError
from shoal.runtime import _procutil as pu
from shoal.runtime._common import DriverBase, ExitHook
from shoal.runtime._proccontainer import ProcContainer
from shoal.runtime._procstats import group_usage, proc_cwd, proc_environ
from shoal.runtime._protocol import (
    ContainerConfig,
    ContainerStats,
    ContainerStatus,
    Fingerprint,
    Mount,
    SecurityConfig,
)

__all__ = ["ExitHook", "ProcessDriver"]

log = logging.getLogger(__name__)


class ProcessDriver(DriverBase[ProcContainer]):
    """Runs containers as host processes. See the module docstring for the design."""

    name = "process"

    def __init__(
        self,
        state_dir: Path,
        log_dir: Path,
        *,
        log_max_bytes: int = 10 * 1024 * 1024,
        on_exit: ExitHook | None = None,
        host_ip: str = "127.0.0.1",
        clock: Clock | None = None,
        poll_interval: float = 0.5,
        use_pidfd: bool = True,
        kill_timeout: float = 5.0,
    ) -> None:
        """``host_ip`` is where the containers' host ports are reachable (exported to them as
        ``SHOAL_HOST_IP``). ``use_pidfd=False`` forces the polling fallback (for tests).
        ``kill_timeout`` bounds the wait after SIGKILL before stop() gives up."""
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir)
        self.log_max_bytes = log_max_bytes
        self.on_exit = on_exit
        self.host_ip = host_ip
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._use_pidfd = use_pidfd and hasattr(os, "pidfd_open")
        self._kill_timeout = kill_timeout
        self._containers: dict[str, ProcContainer] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- Driver protocol ---------------------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            driver=self.name,
            cpu_millis=(os.cpu_count() or 1) * 1000,
            memory_bytes=pu.host_memory_bytes(),
            attributes={"os": sys.platform, "arch": platform.machine(), "driver.process": "1"},
        )

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        c = self._spawn(config)
        previous = self._containers.get(c.container_id)
        if previous is not None:
            self._detach(previous)
        self._containers[c.container_id] = c
        self._save(c)
        log.info("started %s pid=%s ports=%s", c.container_id, c.pid, c.host_ports)
        self._watch(c)
        return c.status()

    def _spawn(self, config: ContainerConfig) -> ProcContainer:
        """Validate, pick ports, build env and fork/exec. Synchronous on purpose: every step
        is a quick syscall (Popen returns once exec succeeded), and keeping it one
        uninterrupted step means no other start() can interleave and grab the same ports."""
        cid = config.container_id
        pu.check_safe("pod uid", config.pod_uid)
        pu.check_safe("container name", config.name)
        where = f"container {config.name!r} of pod {config.namespace}/{config.pod_name}"
        previous = self._containers.get(cid)
        if previous is not None and previous.state == "running":
            raise DriverError(f"{where} is already running (pid {previous.pid})")
        if not config.command:
            raise DriverError(
                f"{where}: the process driver runs host commands and cannot run image "
                f'"{config.image}" without a `command`'
            )
        # No workingDir: run where the agent runs, as Nomad's raw_exec does, so relative paths
        # in a manifest applied from a project directory resolve there.
        cwd = host_working_dir(config.working_dir, config.mounts) or os.getcwd()
        if not os.path.isdir(cwd):
            shown = repr(cwd) if cwd == config.working_dir else f"{config.working_dir!r} ({cwd})"
            raise DriverError(f"{where}: working directory {shown} does not exist")
        user, group = _identity(config.security, where)

        host_ports = self._assign_ports(cid, config.ports, previous, _is_running)
        env = self._build_env(config, host_ports)
        argv = [*config.command, *config.args]
        try:
            executable = pu.resolve_executable(argv[0], env.get("PATH", ""), cwd)
        except DriverError as exc:
            raise DriverError(f"{where}: {exc}") from None

        self._names[cid] = (config.pod_uid, config.name)
        log_path = self.log_path(cid, config.attempt)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            popen = subprocess.Popen(
                argv,
                executable=executable,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                user=user,
                group=group,
                extra_groups=[] if user is not None or group is not None else None,
            )
        except OSError as exc:
            raise DriverError(f'{where}: exec: "{argv[0]}": {exc.strerror or exc}') from exc
        finally:
            os.close(log_fd)
        return ProcContainer(
            container_id=cid,
            pod_uid=config.pod_uid,
            name=config.name,
            pod_name=config.pod_name,
            namespace=config.namespace,
            attempt=config.attempt,
            log_path=log_path,
            pid=popen.pid,
            start_ticks=pu.proc_start_ticks(popen.pid),
            started_at=self._clock.now(),
            host_ports=host_ports,
            state="running",
            popen=popen,
            env=env,
            cwd=cwd,
            user=user,
            group=group,
            memory_limit_bytes=config.memory_limit_bytes,
        )

    async def stop(self, container_id: str, grace_period: float) -> ContainerStatus:
        c = self._get(container_id)
        if c.state != "running" or c.pid is None:
            return c.status()
        if not self._leader_is_ours(c):
            self._check_exit(c)
            return c.status()
        pgid = c.pid
        self._snapshot_group(c)
        pu.signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(c.exited.wait(), timeout=max(grace_period, 0.0))
        except TimeoutError:
            if c.state == "running" and self._leader_is_ours(c):
                self._snapshot_group(c)
                log.info(
                    "%s ignored SIGTERM for %.1fs; sending SIGKILL", container_id, grace_period
                )
                pu.signal_group(pgid, signal.SIGKILL)
            try:
                await asyncio.wait_for(c.exited.wait(), timeout=self._kill_timeout)
            except TimeoutError:
                self._check_exit(c)
                if c.state == "running":
                    raise DriverError(
                        f"container {container_id} (pid {pgid}) did not exit "
                        f"{self._kill_timeout:.0f}s after SIGKILL"
                    ) from None
        return c.status()

    async def remove(self, container_id: str) -> None:
        c = self._containers.get(container_id)
        if c is None:
            return
        if c.state == "running":
            raise DriverError(f"container {container_id} is running; stop it before removing")
        self._detach(c)
        del self._containers[container_id]
        with contextlib.suppress(FileNotFoundError):
            self._state_path(container_id).unlink()

    async def recover(self) -> builtins.list[ContainerStatus]:
        for path in sorted(self.state_dir.glob("*.json")):
            data = pu.read_json(path)
            try:
                if data is None:
                    raise ValueError("not a JSON object")
                c = ProcContainer.from_state(data)
                pu.check_safe("container id", c.container_id)
            except (KeyError, TypeError, ValueError, DriverError) as exc:
                log.warning("ignoring unreadable state file %s: %s", path, exc)
                continue
            if c.container_id in self._containers:
                continue
            self._names[c.container_id] = (c.pod_uid, c.name)
            self._containers[c.container_id] = c
            if c.state == "running" and c.pid is not None and pu.is_running(c.pid, c.start_ticks):
                log.info("adopted %s pid=%d", c.container_id, c.pid)
                self._watch(c)
            elif c.state != "exited":
                # Died while no driver watched it: the exit status is lost for good.
                self._mark_exited(c, None, notify=False)
            else:
                c.exited.set()
        return [c.status() for c in self._containers.values()]

    async def exec(
        self, container_id: str, command: builtins.list[str]
    ) -> asyncio.subprocess.Process:
        """Run ``command`` as another host process "in" the container: the container's
        environment, working directory and user, stdio as pipes. It runs in a session of
        its own and is killed when the container stops or exits, as a process exec'd into
        a real container dies with it."""
        c = self._get(container_id)
        if c.state != "running" or c.pid is None or not self._leader_is_ours(c):
            raise DriverError(f"container {container_id} is not running")
        if not command:
            raise DriverError("exec: no command given")
        env = c.env if c.env is not None else proc_environ(c.pid)
        cwd = c.cwd or proc_cwd(c.pid) or "/"
        try:
            executable = pu.resolve_executable(command[0], env.get("PATH", ""), cwd)
        except DriverError as exc:
            raise DriverError(f"container {container_id}: {exc}") from None
        # Only when set: uvloop's subprocess_exec (the loop of `shoal up`) rejects these
        # keywords even as None.
        ids: dict[str, Any] = {}
        if c.user is not None or c.group is not None:
            ids = {"user": c.user, "group": c.group, "extra_groups": []}
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                executable=executable,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
                **ids,
            )
        except OSError as exc:
            raise DriverError(f'exec: "{command[0]}": {exc.strerror or exc}') from exc
        ticks = pu.proc_start_ticks(proc.pid)
        if ticks is not None:
            c.execs = [e for e in c.execs if pu.is_running(*e)] + [(proc.pid, ticks)]
        return proc

    async def stats(self, container_id: str) -> ContainerStats:
        """CPU and memory of the container's process group, from /proc (see _procstats)."""
        c = self._get(container_id)
        if c.state != "running" or c.pid is None or not self._leader_is_ours(c):
            raise DriverError(f"container {container_id} is not running")
        usage = await asyncio.to_thread(group_usage, c.pid)
        return ContainerStats(
            container_id=container_id,
            timestamp=self._clock.now(),
            cpu_usage_nanos=usage.cpu_nanos,
            memory_bytes=usage.rss_bytes,
            memory_limit_bytes=c.memory_limit_bytes,
            pids=usage.pids,
        )

    # --- internals ---------------------------------------------------------------------------

    def _state_path(self, container_id: str) -> Path:
        return self.state_dir / f"{container_id}.json"

    def _save(self, c: ProcContainer) -> None:
        try:
            pu.write_json_atomic(self._state_path(c.container_id), c.to_state())
        except OSError as exc:
            log.error("cannot write state of %s: %s", c.container_id, exc)

    def _build_env(self, config: ContainerConfig, host_ports: dict[int, int]) -> dict[str, str]:
        """Host basics, then pod identity, then ports, then the user's env (which wins)."""
        env = pu.base_host_env(os.environ)
        env["HOSTNAME"] = config.pod_name
        env["SHOAL_POD_NAME"] = config.pod_name
        env["SHOAL_POD_NAMESPACE"] = config.namespace
        env["SHOAL_POD_UID"] = config.pod_uid
        env["SHOAL_HOST_IP"] = self.host_ip
        if config.ports:
            env["PORT"] = str(host_ports[config.ports[0].container_port])
        for req in config.ports:
            if req.name:
                env[pu.port_env_name(req.name)] = str(host_ports[req.container_port])
        env.update(config.env)
        return env

    def _leader_is_ours(self, c: ProcContainer) -> bool:
        """May we signal group ``c.pid``? Our unreaped child always; else the start time must
        still match (a zombie leader counts: it still pins the group id)."""
        if c.pid is None:
            return False
        if c.popen is not None:
            return c.popen.returncode is None
        return pu.is_same_process(c.pid, c.start_ticks)

    def _snapshot_group(self, c: ProcContainer) -> None:
        """For adopted processes only: remember group members while the group is surely ours,
        so they can be finished off (by pid + start time) once the leader is gone."""
        if c.popen is None and c.pid is not None:
            known = set(c.stragglers)
            c.stragglers.extend(m for m in pu.group_members(c.pid) if m not in known)

    def _watch(self, c: ProcContainer) -> None:
        """Get told when ``c`` exits: pidfd + add_reader, else a polling task."""
        if self._use_pidfd:
            # Our own child cannot be reused before we reap it; an adopted pid might have been.
            exc = self._watch_pidfd(c, verify=c.popen is None)
            if exc is None:
                return
            log.debug("pidfd_open unavailable (%s); polling %s", exc, c.container_id)
        c.poll_task = asyncio.get_running_loop().create_task(self._poll(c))

    async def _poll(self, c: ProcContainer) -> None:
        while not self._check_exit(c):
            await asyncio.sleep(self._poll_interval)

    def _detach(self, c: ProcContainer) -> None:
        super()._detach(c)
        task, c.poll_task = c.poll_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _check_exit(self, c: ProcContainer) -> bool:
        """If ``c``'s process has exited: clean up its group, reap it, record the exit.
        Returns True once the container is exited."""
        if c.state != "running" or c.pid is None:
            self._detach(c)
            return True
        code: int | None
        if c.popen is not None:
            try:
                res = os.waitid(os.P_PID, c.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                res = None
                code = None  # reaped behind our back; status lost
            else:
                if res is None:
                    return False
                code = pu.exit_code_from_waitid(res)
                # The leader is an unreaped zombie, so the group id cannot have been reused.
                pu.signal_group(c.pid, signal.SIGKILL)
            c.popen.poll()  # reap
        else:
            if pu.is_running(c.pid, c.start_ticks):
                return False
            code = None  # not our child: its exit status is not ours to read
            for pid, ticks in c.stragglers:
                pu.kill_if_same(pid, ticks, signal.SIGKILL)
            if pu.is_same_process(c.pid, c.start_ticks):
                # Only reaps if we are its parent/subreaper; avoids leaving a zombie.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(c.pid, os.WNOHANG)
        self._mark_exited(c, code)
        return True

    def _mark_exited(
        self,
        c: ProcContainer,
        code: int | None,
        *,
        notify: bool = True,
        reason: str | None = None,
    ) -> None:
        """Also forget the stragglers and kill what was exec'd into the container."""
        c.stragglers = []
        for pid, ticks in c.execs:
            if pu.is_same_process(pid, ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        c.execs = []
        super()._mark_exited(c, code, notify=notify, reason=reason)


def _is_running(c: ProcContainer) -> bool:
    """Whether ``c`` holds its host ports (an exited one's are only remembered)."""
    return c.state == "running"


def host_working_dir(working_dir: str, mounts: builtins.list[Mount]) -> str:
    """Where a process container's workingDir is on the host.

    The process driver cannot mount anything, so a volume mount is only honoured for the
    working directory: a workingDir at or under a mount's mountPath becomes the same place
    under the mount's host source (the deepest mountPath wins). This lets a manifest that
    mounts hostPath ``./apps`` at ``/app`` with workingDir ``/app`` run unchanged on both
    drivers. Other mounts are not visible to process containers: they see the host's own
    filesystem.
    """
    if not working_dir:
        return ""
    best: tuple[int, str] | None = None
    for m in mounts:
        dest = "/" + "/".join(p for p in m.destination.split("/") if p)
        if working_dir == dest or working_dir.startswith(dest.rstrip("/") + "/"):
            rest = working_dir[len(dest) :].lstrip("/")
            mapped = str(m.source / rest) if rest else str(m.source)
            if best is None or len(dest) > best[0]:
                best = (len(dest), mapped)
    return best[1] if best is not None else working_dir


def _identity(security: SecurityConfig, where: str) -> tuple[int | None, int | None]:
    """(uid, gid) to run as, None for "the agent's own". Switching needs root; asking for
    another user without it is an error rather than a silent run as the wrong user."""
    user, group = security.run_as_user, security.run_as_group
    if os.geteuid() == 0:
        return user, group
    if user is not None and user != os.geteuid():
        raise DriverError(f"{where}: cannot run as user {user}: the agent is not root")
    if group is not None and group != os.getegid():
        raise DriverError(f"{where}: cannot run as group {group}: the agent is not root")
    return None, None

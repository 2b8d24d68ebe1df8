"""Running the data plane's tools (``ip``, ``nft``, ``tc``, CNI plugins), optionally inside a
named network namespace.

Every network operation of shoal goes through here, so that an agent whose node *is* a
network namespace (``--node-netns``, how tests and demos build several nodes on one machine)
runs exactly the same commands as one on a real machine, only prefixed by
``ip netns exec NAME``.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal.errors import NetworkError

NETNS_DIR = "/var/run/netns"


def in_netns(argv: Sequence[str], netns: str | None) -> list[str]:
    """``argv`` run inside the named network namespace (None: the caller's own)."""
    if not netns:
        return list(argv)
    return ["ip", "netns", "exec", netns, *argv]


def _failure(argv: Sequence[str], netns: str | None, code: int, stderr: str) -> NetworkError:
    where = f" (in netns {netns})" if netns else ""
    detail = stderr.strip() or f"exit status {code}"
    return NetworkError(f"{' '.join(argv)}{where}: {detail}")


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run a command to completion and return its stdout. Raises NetworkError (naming the
    command and carrying its stderr) on a non-zero exit when ``check``."""
    full = in_netns(argv, netns)
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NetworkError(f"{full[0]}: not installed ({exc})") from None
    if check and proc.returncode != 0:
        raise _failure(argv, netns, proc.returncode, proc.stderr)
    return proc.stdout


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished command: exit status and both outputs."""

    returncode: int
    stdout: str
    stderr: str


async def arun(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """:func:`run` without blocking the event loop."""
    done = await arun_completed(argv, netns=netns, input=input, env=env)
    if check and done.returncode != 0:
        raise _failure(argv, netns, done.returncode, done.stderr)
    return done.stdout


async def arun_completed(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run a command and return its exit status and outputs, whatever the status (for
    tools that explain a failure on stdout, as CNI plugins do)."""
    full = in_netns(argv, netns)
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise NetworkError(f"{full[0]}: not installed ({exc})") from None
    out, err = await proc.communicate(input.encode() if input is not None else None)
    code = proc.returncode if proc.returncode is not None else -1
    return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))

"""``python -m shoal.apiserver --data-dir DIR [--host H] [--port P] [--parent-pid PID]``

The API server alone, with nothing else imported: what ``shoal up`` runs in its child
process (the scheduler, controllers and agent run in the parent). With ``--parent-pid`` it
exits when that process does, so it never outlives a ``kill -9`` of ``shoal up``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from shoal.apiserver._serve import DEFAULT_PORT, serve_data_dir
from shoal.discovery import RegistryConfig


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL us when the parent dies (Linux); SQLite's WAL makes that as
    safe as a crash. Returns False when the parent is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent_pid


async def _main(
    data_dir: Path, host: str, port: int, parent_pid: int, registry: RegistryConfig | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = asyncio.create_task(serve_data_dir(data_dir, host, port, registry=registry))
    waiters = {server, asyncio.create_task(stop.wait())}
    if parent_pid:

        async def parent_gone() -> None:  # portable fallback to the parent-death signal
            while os.getppid() == parent_pid:
                await asyncio.sleep(1.0)

        waiters.add(asyncio.create_task(parent_gone()))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    if server in done:
        server.result()  # re-raise why the server stopped (e.g. the port is taken)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(coro)
        return
    uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal.apiserver")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--node-name", default="", help="the registry's node (default: host name)")
    ap.add_argument("--consul-port", type=int, default=8500, help="-1 turns the Consul API off")
    ap.add_argument("--dns-port", type=int, default=8600, help="-1 turns DNS off")
    ap.add_argument("--registry-host", default="127.0.0.1")
    ap.add_argument("--enable-script-checks", action="store_true")
    ap.add_argument("--no-registry", action="store_true")
    args = ap.parse_args(argv)
    registry = None
    if not args.no_registry:
        import socket

        registry = RegistryConfig(
            node_name=args.node_name or socket.gethostname(),
            consul_host=args.registry_host,
            consul_port=args.consul_port,
            dns_host=args.registry_host,
            dns_port=args.dns_port,
            enable_script_checks=args.enable_script_checks,
        )
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.parent_pid and not die_with_parent(args.parent_pid):
        return 1
    try:
        _run(_main(args.data_dir, args.host, args.port, args.parent_pid, registry))
    except OSError as exc:
        print(
            f"error: the API server could not listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

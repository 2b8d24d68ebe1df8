"""ControllerManager lifecycle: shared informers, clean cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from shoal.client import Client
from shoal.controllers import ControllerManager
from shoal.testing import running_api_server


async def test_run_shares_informers_and_cancels_cleanly() -> None:
    async with running_api_server() as srv, Client(srv.url) as client:
        before = asyncio.all_tasks()
        manager = ControllerManager(client)
        # One informer per kind, however many controllers read it.
        kinds = [i.rc.info.kind for i in manager.informers.all()]
        assert sorted(kinds) == sorted(set(kinds))
        assert set(kinds) == {
                "Pod", "ReplicaSet", "Deployment", "Service", "Endpoints", "Node", "Network",
            }  # fmt: skip

        task = asyncio.create_task(manager.run())
        await manager.wait_synced(10)
        assert manager.informers.synced
        ours = {t for t in asyncio.all_tasks() - before if _is_ours(t)}
        assert len(ours) > len(kinds)  # informers, controllers, workers, monitors

        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        await client.flush_events()
        # (The server's own request tasks for the closed watches may still be winding down.)
        leftover = [t.get_name() for t in ours if not t.done()]
        assert leftover == []


def _is_ours(task: asyncio.Task[object]) -> bool:
    name = task.get_name()
    return (
        name.startswith(("informer-", "controller-"))
        or "-worker-" in name
        or ("-background-" in name)
    )

"""The agent package's public names are pinned."""

from __future__ import annotations

import dataclasses

import shoal.agent
from shoal.agent import AgentConfig


def test_all_is_pinned() -> None:
    assert shoal.agent.__all__ == ["Agent", "AgentConfig", "default_runtime"]


def test_config_defaults() -> None:
    cfg = AgentConfig("n", data_dir=__import__("pathlib").Path("/tmp/d"))
    assert (cfg.address, cfg.http_port, cfg.heartbeat_interval, cfg.runtime) == (
        "127.0.0.1",
        0,
        2.0,
        "process",
    )
    assert (cfg.backoff_initial, cfg.backoff_cap, cfg.stop_pods_on_exit) == (10.0, 300.0, False)
    assert cfg.labels == {}
    assert cfg.resolved_image_dir == cfg.data_dir / "images"
    assert cfg.resolved_cgroup_parent == "/shoal/n"
    assert (cfg.image_pull_backoff_initial, cfg.image_pull_backoff_cap) == (10.0, 300.0)
    assert (cfg.auth_file, cfg.insecure_registries) == (None, ())
    assert {f.name for f in dataclasses.fields(AgentConfig)} >= {
        "node_name",
        "data_dir",
        "address",
        "http_port",
        "heartbeat_interval",
        "labels",
        "runtime",
        "stop_pods_on_exit",
    }

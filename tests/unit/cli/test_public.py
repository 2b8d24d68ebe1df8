"""The CLI package's public names and the commands it registers."""

from __future__ import annotations

import shoal.cli
from shoal.cli import app


def test_public_names() -> None:
    assert shoal.cli.__all__ == ["app", "main"]
    assert callable(shoal.cli.main)


def test_commands_are_registered() -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    assert {"apply", "get", "describe", "delete", "logs", "scale", "version"} <= names
    assert "rollout" in {g.name for g in app.registered_groups}

"""Tests that need root and real system tools (runc, umoci, skopeo, docker-registry...).

They skip only when not running as root (a developer's laptop). As root (CI is root) the
tools must be there, since ``make test`` installs them: a missing tool fails the test rather
than skipping it silently.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_root(*tools: str) -> None:
    """Skip unless root; as root, fail when any of ``tools`` is not on PATH."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"running as root but {', '.join(missing)} not installed (make test installs them)"
        )

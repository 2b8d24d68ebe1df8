"""Fixtures for data-plane tests: network namespaces the test itself creates, with a unique
prefix, always deleted afterwards (even when the test fails)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.rootreq import require_root


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def prefix() -> str:
    """A short unique prefix for this test's resources (netns, links, bridges, nft tables):
    ``t`` + 5 hex digits, so ``PREFIX-xxxxxxxx`` still fits a 15-character interface name."""
    return "t" + secrets.token_hex(3)[:5]


@pytest.fixture
def make_netns(prefix: str) -> Iterator[Callable[[str], str]]:
    """``make_netns("n1")`` creates netns ``{prefix}-n1`` with loopback up and returns its
    name. Every namespace made is deleted at teardown."""
    require_root("ip", "nft", "tc")
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{prefix}-{suffix}"
        _ip("netns", "add", name)
        made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(made):
        _ip("netns", "delete", name, check=False)
        if os.path.exists(f"/var/run/netns/{name}"):
            os.unlink(f"/var/run/netns/{name}")


def veth_link(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
    """A veth pair between two namespaces, ``addr_*`` with prefix (e.g. 192.168.12.1/30),
    both ends up."""
    _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    _ip("-n", ns_a, "addr", "add", addr_a, "dev", if_a)
    _ip("-n", ns_b, "addr", "add", addr_b, "dev", if_b)
    _ip("-n", ns_a, "link", "set", if_a, "up")
    _ip("-n", ns_b, "link", "set", if_b, "up")

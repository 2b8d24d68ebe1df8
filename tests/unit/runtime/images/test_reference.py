"""Reference normalisation follows Docker's rules; invalid references name the part at fault."""

from __future__ import annotations

import pytest

from shoal.runtime.images import InvalidReferenceError, normalize_reference
from shoal.runtime.images._reference import is_loopback_host, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/user/app:v2", "docker.io/user/app:v2"),
        ("user/app", "docker.io/user/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/team/app:1.0", "localhost:5000/team/app:1.0"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("[::1]:5000/app:x", "[::1]:5000/app:x"),
        ("Quay.IO/org/app", "quay.io/org/app:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"ghcr.io/o/a:t@{DIGEST}", f"ghcr.io/o/a:t@{DIGEST}"),
        ("a.b/c__d/e-f.g:Tag_1", "a.b/c__d/e-f.g:Tag_1"),
    ],
)
def test_normalisation(given: str, normalised: str) -> None:
    assert normalize_reference(given) == normalised
    assert normalize_reference(normalised) == normalised  # idempotent


def test_parts() -> None:
    ref = parse_reference(f"127.0.0.1:5000/a/b:t@{DIGEST}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "a/b",
        "t",
        DIGEST,
    )
    assert ref.manifest_ref == DIGEST and ref.tagged == "127.0.0.1:5000/a/b:t"
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert parse_reference(f"x@{DIGEST}").tagged is None


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("", "empty"),
        ("Busybox", "'Busybox' must be lowercase"),
        ("a b", "whitespace"),
        ("busybox@sha256:abc", "digest 'sha256:abc'"),
        ("busybox@md5:" + "a" * 32, "digest"),
        ("busybox:-x", "tag '-x'"),
        ("busybox:" + "x" * 129, "tag"),
        ("a:b:c", "'a:b'"),
        ("foo//bar", "empty path component"),
        ("foo/", "empty path component"),
        ("localhost:0/app", "port '0'"),
        ("localhost:http/app", "port 'http'"),
        ("bad_host.io:5000/x", "hostname"),
        ("[::g]:5000/x", "IPv6"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_invalid_references_are_named(given: str, complaint: str) -> None:
    with pytest.raises(InvalidReferenceError) as caught:
        normalize_reference(given)
    assert repr(given) in str(caught.value)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.9.9.9", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
        ("docker.io", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback

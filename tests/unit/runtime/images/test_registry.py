"""Registry client pieces that need no registry: scheme choice and error-body translation."""

from __future__ import annotations

import httpx
import pytest

from shoal.runtime.images._auth import AuthStore
from shoal.runtime.images._reference import parse_reference
from shoal.runtime.images._registry import RegistryClient, registry_error_text


@pytest.mark.parametrize(
    ("ref", "url"),
    [
        ("127.0.0.1:5000/a/b:1", "http://127.0.0.1:5000/v2/a/b"),
        ("localhost/app", "http://localhost/v2/app"),
        ("[::1]:5000/app", "http://[::1]:5000/v2/app"),
        ("registry.example.com/app", "https://registry.example.com/v2/app"),
        ("insecure.lan:5000/app", "http://insecure.lan:5000/v2/app"),
        ("busybox", "https://registry-1.docker.io/v2/library/busybox"),
    ],
)
def test_plain_http_only_for_loopback_and_insecure(ref: str, url: str) -> None:
    client = RegistryClient(
        httpx.AsyncClient(),
        AuthStore(None, explicit=False),
        insecure_registries=["insecure.lan:5000"],
    )
    assert client.base_url(parse_reference(ref)) == url


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}',
         "manifest unknown: manifest unknown"),
        (b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}',
         "unauthorized: authentication required"),
        (b'{"errors":[{"code":"DENIED","message":"no","detail":"quota"},{"code":"X"}]}',
         "denied: no (quota); x: x"),
        (b"<html>nginx</html>", ""),
        (b'{"errors": "nope"}', ""),
    ],
)  # fmt: skip
def test_registry_error_text(body: bytes, text: str) -> None:
    assert registry_error_text(body) == text

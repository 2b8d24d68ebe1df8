"""Auth file parsing and lookup, WWW-Authenticate parsing, token caching."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from shoal.runtime.images import ImageError
from shoal.runtime.images._auth import (
    AuthStore,
    Challenge,
    Credentials,
    TokenCache,
    default_auth_file,
    parse_auth_file,
    parse_www_authenticate,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_file_formats_and_host_keys() -> None:
    doc = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": _b64("hub:pw")},
            "Registry.Example.com:5000": {"auth": _b64("u:p:with:colons")},
            "http://127.0.0.1:5000/v2/": {"username": "plain", "password": "pw2"},
            "helper-only.io": {"identitytoken": "xyz"},
        },
        "credsStore": "desktop",
    }
    creds = parse_auth_file(json.dumps(doc), "f.json")
    assert creds == {
        "docker.io": Credentials("hub", "pw"),
        "registry.example.com:5000": Credentials("u", "p:with:colons"),
        "127.0.0.1:5000": Credentials("plain", "pw2"),
    }
    assert "pw" not in repr(creds["docker.io"])


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "f.json: not valid JSON"),
        ("[]", "f.json: must be a JSON object"),
        ('{"auths": []}', "field 'auths' must be an object"),
        ('{"auths": {"h": "x"}}', "auths['h'] must be an object"),
        ('{"auths": {"h": {"auth": "***"}}}', "auths['h'].auth is not base64"),
        (json.dumps({"auths": {"h": {"auth": _b64("nocolon")}}}), "auths['h'].auth must decode"),
        ('{"auths": {"h": {"username": "u"}}}', "auths['h'] needs both 'username' and 'password'"),
    ],
)
def test_bad_auth_files_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ImageError) as caught:
        parse_auth_file(text, "f.json")
    assert complaint in str(caught.value)


def test_default_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_AUTH_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_auth_file() is None
    docker = tmp_path / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text("{}")
    assert default_auth_file() == docker
    shoal = tmp_path / ".config" / "shoal" / "auth.json"
    shoal.parent.mkdir(parents=True)
    shoal.write_text("{}")
    assert default_auth_file() == shoal
    monkeypatch.setenv("SHOAL_AUTH_FILE", str(tmp_path / "env.json"))
    assert default_auth_file() == tmp_path / "env.json"


def test_auth_store_rereads_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"h:1": {"auth": _b64("a:1")}}}))
    store = AuthStore.open(path)
    assert store.lookup("h:1") == Credentials("a", "1")
    assert store.lookup("other") is None
    path.write_text(json.dumps({"auths": {"h:1": {"auth": _b64("bb:22")}}}))
    os.utime(path, ns=(1, 1))
    assert store.lookup("h:1") == Credentials("bb", "22")
    path.unlink()
    with pytest.raises(ImageError, match=f"auth file {path} does not exist"):
        store.lookup("h:1")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            [Challenge("bearer", {"realm": "https://auth.docker.io/token",
                                  "service": "registry.docker.io",
                                  "scope": "repository:library/busybox:pull"})],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        (
            'bearer realm="r", scope="repository:a:pull,push"',
            [Challenge("bearer", {"realm": "r", "scope": "repository:a:pull,push"})],
        ),
        (
            'Basic realm=x, Bearer realm="a\\"b",service=s',
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": 'a"b', "service": "s"})],
        ),
        ("Negotiate", [Challenge("negotiate", {})]),
        ("", []),
    ],
)  # fmt: skip
def test_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_token_cache_expires_early() -> None:
    cache = TokenCache()
    cache.put("r", "s", "tok", 300)
    assert cache.get("r", "s") == "tok"
    assert cache.get("r", "other") is None
    cache.put("r", "s2", "short", 0)
    assert cache.get("r", "s2") is None
    cache.drop("r", "s")
    assert cache.get("r", "s") is None

"""Pulling from registries that want credentials: htpasswd (Basic) and token (Bearer JWT) auth,
with credentials from a Docker-format auth file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.runtime.images import ImagePullError, ImageService
from tests.oci_support import TOOLS, push, registry, token_server, write_auth_file
from tests.rootreq import require_root

USER, PASSWORD = "shoal", "s3cret-pw"


async def test_basic_auth_uses_the_auth_file(busybox_layout: Path, tmp_path: Path) -> None:
    require_root(*TOOLS)
    with registry(tmp_path / "reg", htpasswd=(USER, PASSWORD)) as reg:
        ref = f"{reg.host}/private/busybox:1"
        push(busybox_layout, ref, (USER, PASSWORD))

        other_host = write_auth_file(tmp_path / "other.json", "127.0.0.1:1", USER, PASSWORD)
        svc = ImageService(tmp_path / "store", auth_file=other_host)
        try:
            with pytest.raises(ImagePullError) as caught:
                await svc.pull(ref)
            message = str(caught.value)
            assert f"{reg.host} requires authentication" in message
            assert f"no credentials for it in the auth file ({other_host})" in message
        finally:
            await svc.aclose()

        wrong = write_auth_file(tmp_path / "wrong.json", reg.host, USER, "nope")
        svc = ImageService(tmp_path / "store", auth_file=wrong)
        try:
            with pytest.raises(ImagePullError, match="401: unauthorized") as caught:
                await svc.pull(ref)
            assert f"the credentials for {reg.host} were rejected" in str(caught.value)
        finally:
            await svc.aclose()

        # username/password keys work as well as "auth"
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"auths": {reg.host: {"username": USER, "password": PASSWORD}}}))
        svc = ImageService(tmp_path / "store", auth_file=good)
        try:
            record = await svc.pull(ref)
            assert record.repo_tags == [ref]
            assert svc.resolve(ref).layer_dirs[0].joinpath("bin", "busybox").is_file()
        finally:
            await svc.aclose()


async def test_bearer_token_auth_against_a_token_registry(
    busybox_layout: Path, tmp_path: Path
) -> None:
    require_root(*TOOLS)
    with (
        token_server(tmp_path / "tokens", (USER, PASSWORD)) as tokens,
        registry(tmp_path / "reg", token_auth=tokens) as reg,
    ):
        push(busybox_layout, f"{reg.host}/team/busybox:1", (USER, PASSWORD))
        push(busybox_layout, f"{reg.host}/team/busybox:3", (USER, PASSWORD))
        tokens.requests.clear()

        anonymous = write_auth_file(tmp_path / "none.json", "127.0.0.1:1", USER, PASSWORD)
        svc = ImageService(tmp_path / "store-anon", auth_file=anonymous)
        try:
            with pytest.raises(ImagePullError, match="answered 401: unauthorized: credentials req"):
                await svc.pull(f"{reg.host}/team/busybox:1")
        finally:
            await svc.aclose()
        assert tokens.requests[-1]["user"] == ""

        tokens.requests.clear()
        auth = write_auth_file(tmp_path / "auth.json", reg.host, USER, PASSWORD)
        svc = ImageService(tmp_path / "store", auth_file=auth)
        try:
            one = await svc.pull(f"{reg.host}/team/busybox:1")
            three = await svc.pull(f"{reg.host}/team/busybox:3")
            assert three.layers[0] == one.layers[0]
        finally:
            await svc.aclose()
        # One token, for the one scope, cached across both pulls.
        assert tokens.requests == [
            {"scope": "repository:team/busybox:pull", "user": USER, "status": "200"}
        ]

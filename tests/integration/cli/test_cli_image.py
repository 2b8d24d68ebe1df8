"""`shoal image pull|ls|load|rm` against a real local registry (Debian's docker-registry) with
a busybox image built by umoci and pushed by skopeo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from shoal.cli import app
from tests.rootreq import require_root

TOOLS = ("umoci", "skopeo", "docker-registry", "busybox")


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root(*TOOLS)
    from tests.oci_support import build_busybox_image

    return build_busybox_image(tmp_path_factory.mktemp("img"), layers=2, tag="1")


@pytest.fixture
def pushed(image_layout: Path, tmp_path: Path) -> Iterator[str]:
    """The image in a fresh registry; yields its reference."""
    from tests.oci_support import push, registry

    with registry(tmp_path / "registry") as reg:
        ref = f"{reg.host}/shoal-test/bb:1"
        push(image_layout, ref, src_tag="1")
        yield ref


def shoal(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_pull_ls_rm(pushed: str, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    first = shoal("image", "pull", pushed, "--data-dir", data)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert sum(line.endswith(": pulled") for line in lines) == 2  # both layers downloaded
    assert lines[-2] == f"Status: Downloaded newer image for {pushed}"
    assert lines[-1].startswith("Digest: sha256:") and len(lines[-1]) == len("Digest: sha256:") + 64

    again = shoal("image", "pull", pushed, "--data-dir", data)
    assert again.exit_code == 0, again.output
    assert f"Status: Image is up to date for {pushed}" in again.stdout
    assert again.stdout.splitlines()[-1] == lines[-1]
    assert not any(line.endswith(": pulled") for line in again.stdout.splitlines())

    listed = shoal("image", "ls", "--data-dir", data)
    head, *rows = listed.stdout.splitlines()
    assert head.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repo, tag = pushed.rsplit(":", 1)
    assert [r.split()[:2] for r in rows] == [[repo, tag]]
    image_id = rows[0].split()[2]
    assert len(image_id) == 12
    assert shoal("image", "ls", "-q", "--data-dir", data).stdout.split() == [image_id]

    removed = shoal("image", "rm", pushed, "--data-dir", data)
    assert removed.exit_code == 0, removed.output
    assert pushed in removed.stdout
    assert shoal("image", "ls", "-q", "--data-dir", data).stdout.split() == []

    gone = shoal("image", "rm", pushed, "--data-dir", data)
    assert gone.exit_code == 1
    assert gone.stderr.startswith("error: ") and "Traceback" not in gone.output


def test_pull_errors_are_one_line(pushed: str, tmp_path: Path) -> None:
    missing = pushed.replace("bb:1", "nothing:here")
    res = shoal("image", "pull", missing, "--data-dir", str(tmp_path / "data"))
    assert res.exit_code == 1
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert "Traceback" not in res.output


def test_load_layout(image_layout: Path, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    res = shoal("image", "load", str(image_layout), "--data-dir", data)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("Loaded image: ")
    loaded = res.stdout.split("Loaded image: ", 1)[1].strip()
    repo, tag = loaded.rsplit(":", 1)
    rows = shoal("image", "ls", "--data-dir", data).stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [[repo, tag]]

    named = shoal(
        "image", "load", str(image_layout), "--data-dir", data, "--tag", "shoal.test/bb:2"
    )
    assert named.exit_code == 0, named.output
    assert "Loaded image: shoal.test/bb:2" in named.stdout.splitlines()
    rows = shoal("image", "ls", "--data-dir", data).stdout.splitlines()[1:]
    assert sorted(r.split()[:2] for r in rows) == sorted([[repo, tag], ["shoal.test/bb", "2"]])
    assert len({r.split()[2] for r in rows}) == 1  # one image, two names

    bad = shoal("image", "load", str(tmp_path / "nope.tar"), "--data-dir", data)
    assert bad.exit_code == 1 and "no such file" in bad.stderr

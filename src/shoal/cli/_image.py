"""``shoal image pull|load|ls|rm``: the local image store, as ``docker pull/load/images/rmi``.

These commands work on ``<data-dir>/images`` directly (no API server): the same store the
node agent of ``shoal up --data-dir DIR`` reads, so an image pulled or loaded here is
"already present on machine" for its pods. The store is safe to share between processes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from shoal._util import parse_time
from shoal.cli._app import app, fail, guarded, print_error_lines
from shoal.cli._output import human_duration, make_table, print_table, stdout_console
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.runtime.images import ImageRecord, ImageService, PullProgress

image_app = typer.Typer(
    name="image",
    help="Pull, load, list and remove images in the local store (<data-dir>/images).",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="shoal's data directory, as given to `shoal up` (the store is DATA_DIR/images).",
        show_default=False,
    ),
]
AuthFile = Annotated[
    Path | None,
    typer.Option(
        "--auth-file",
        help="Registry credentials in Docker's config.json format (default: $SHOAL_AUTH_FILE, "
        "~/.config/shoal/auth.json, then ~/.docker/config.json).",
        show_default=False,
    ),
]
Insecure = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-registry",
        help="HOST[:PORT] to reach over plain HTTP (loopback registries always are).",
        show_default=False,
    ),
]


def image_root(data_dir: Path | None) -> Path:
    from shoal.cli._run import default_data_dir

    return (data_dir or default_data_dir()).resolve() / "images"


def _with_service(
    data_dir: Path | None,
    auth_file: Path | None,
    insecure: list[str] | None,
    job: Callable[[ImageService], Awaitable[int]],
) -> None:
    """Run ``job`` with an ImageService on the store; image errors end the command with one
    line and exit code 1 (``guarded``), never a traceback."""

    async def main() -> int:
        # Imported here: the rest of the CLI should not pay for the image machinery.
        from shoal.runtime.images import ImageService

        svc = ImageService(
            image_root(data_dir), auth_file=auth_file, insecure_registries=tuple(insecure or ())
        )
        try:
            return await job(svc)
        finally:
            await svc.aclose()

    code = guarded(lambda: asyncio.run(main()), "")
    if code:
        raise typer.Exit(code)


# --- formatting (pure) -------------------------------------------------------------------------


def short_id(digest: str) -> str:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab`` (docker's IMAGE ID)."""
    return digest.split(":", 1)[-1][:12]


def human_size(n: int) -> str:
    """Docker's decimal sizes: ``4.26MB``, ``512kB``, ``12B``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            text = f"{size:.3g}" if unit != "B" else str(int(size))
            return f"{text}{unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def split_tag(ref: str) -> tuple[str, str]:
    """``host:5000/a/b:tag`` -> (``host:5000/a/b``, ``tag``); Docker Hub's library prefix is
    dropped as ``docker images`` shows it (``busybox``, ``user/app``)."""
    name, tag = ref, "<none>"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name, tag


def created_ago(created: str, now: float) -> str:
    if not created:
        return "N/A"
    try:
        return f"{human_duration(now - parse_time(created))} ago"
    except ValueError:
        return "N/A"


def image_rows(records: list[ImageRecord], now: float) -> list[list[str]]:
    """docker images' rows: one per tag (an untagged image once, as <none>), newest first."""
    rows: list[tuple[str, list[str]]] = []
    for rec in records:
        cells = [short_id(rec.id), created_ago(rec.created, now), human_size(rec.size)]
        for ref in rec.repo_tags or ["<none>:<none>"]:
            repo, tag = ("<none>", "<none>") if ref == "<none>:<none>" else split_tag(ref)
            rows.append((rec.created, [repo, tag, *cells]))
    rows.sort(key=lambda r: (r[0], r[1][0], r[1][1]), reverse=True)
    return [cells for _created, cells in rows]


# --- pull progress -----------------------------------------------------------------------------


class PullDisplay:
    """Layer-by-layer progress: rich bars on a terminal, one line per finished layer
    otherwise (logs, CI). Cached layers say ``cached`` instead of downloading."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.finished: set[str] = set()
        self.cached = 0
        self.layers = 0
        if tty:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )

    def __enter__(self) -> PullDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, p: PullProgress) -> None:
        if p.kind != "layer" or p.digest in self.finished:
            return
        label = short_id(p.digest)
        if p.done:
            self.finished.add(p.digest)
            self.layers += 1
            self.cached += p.cached
        state = "cached" if p.cached else "done" if p.done else "downloading"
        if self.progress is None:
            if p.done:
                typer.echo(f"{label}: {'cached' if p.cached else 'pulled'}")
            return
        task = self.tasks.get(p.digest)
        total = p.total or None
        if task is None:
            task = self.tasks[p.digest] = self.progress.add_task(label, total=total)
        completed = p.total if p.cached else p.downloaded
        self.progress.update(task, completed=completed, total=total, description=f"{label} {state}")


# --- commands ----------------------------------------------------------------------------------


@image_app.command("pull")
def pull(
    reference: Annotated[str, typer.Argument(help="e.g. busybox, 127.0.0.1:5000/app:1.2")],
    data_dir: DataDir = None,
    auth_file: AuthFile = None,
    insecure_registry: Insecure = None,
) -> None:
    """Download an image (only the layers not already stored) and record its tag."""

    async def job(svc: ImageService) -> int:
        with PullDisplay(sys.stdout.isatty()) as display:
            record = await svc.pull(reference, progress=display)
        fresh = display.cached < display.layers  # some layer was downloaded
        ref = record.repo_tags[0] if record.repo_tags else reference
        status = "Downloaded newer image for" if fresh else "Image is up to date for"
        typer.echo(f"Status: {status} {ref}")
        typer.echo(f"Digest: {record.digest}")
        return 0

    _with_service(data_dir, auth_file, insecure_registry, job)


@image_app.command("load")
def load(
    file: Annotated[
        Path, typer.Argument(help="An OCI layout directory, an OCI archive or a docker save tar.")
    ],
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="Also name the loaded image REF (repeatable; the file must hold one image).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    auth_file: AuthFile = None,
    insecure_registry: Insecure = None,
) -> None:
    """Import images from a file, with no registry involved."""
    names = list(tag or [])
    if not file.exists():
        fail(f"{file}: no such file or directory")

    async def job(svc: ImageService) -> int:
        records = await asyncio.to_thread(svc.load, file)
        if names and len(records) != 1:
            fail(f"--tag needs a file holding one image; {file} holds {len(records)}")
        for name in names:
            records = [svc.tag(records[0].digest, name)]
        for rec in records:
            for repo_tag in rec.repo_tags:
                typer.echo(f"Loaded image: {repo_tag}")
            if not rec.repo_tags:
                typer.echo(f"Loaded image ID: {rec.id}")
        return 0

    _with_service(data_dir, auth_file, insecure_registry, job)


@image_app.command("ls")
@image_app.command("list", hidden=True)
def ls(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only image IDs.")] = False,
    data_dir: DataDir = None,
    auth_file: AuthFile = None,
    insecure_registry: Insecure = None,
) -> None:
    """List stored images (REPOSITORY TAG IMAGE ID CREATED SIZE, like docker images)."""

    async def job(svc: ImageService) -> int:
        records = svc.list()
        if quiet:
            seen: list[str] = []
            for rec in records:
                if short_id(rec.id) not in seen:
                    seen.append(short_id(rec.id))
            for sid in seen:
                typer.echo(sid)
            return 0
        head = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        print_table(stdout_console(), make_table(head, image_rows(records, time.time())))
        return 0

    _with_service(data_dir, auth_file, insecure_registry, job)


@image_app.command("rm")
@image_app.command("rmi", hidden=True)
def rm(
    references: Annotated[list[str], typer.Argument(help="Images: name[:tag], name@digest or ID.")],
    data_dir: DataDir = None,
    auth_file: AuthFile = None,
    insecure_registry: Insecure = None,
) -> None:
    """Untag images; an image left without tags is deleted with the layers only it used.
    Each reference is tried; the exit code is 1 if any failed."""

    async def job(svc: ImageService) -> int:
        failed = 0
        for ref in references:
            try:
                lines: list[Any] = svc.remove(ref)
            except ShoalError as exc:
                failed += 1
                print_error_lines([f"error: {exc}"])
                continue
            for line in lines:
                typer.echo(str(line))
        return 1 if failed else 0

    _with_service(data_dir, auth_file, insecure_registry, job)

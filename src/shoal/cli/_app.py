"""The typer application, its global options, and the one place where a command's async work
is run and its errors become a readable line and an exit code.

Other modules register commands on ``app`` (or on a sub-app added to it) at import time;
``shoal.cli`` imports them all. Every command does its work through ``run(ctx, job)``, which
opens a Client on the chosen server, runs ``job(client)`` under ``asyncio.run`` and turns
``ShoalError``s into ``error: ...`` on stderr with exit code 1 -- never a traceback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer

from shoal.cli._apply import api_error_lines
from shoal.cli._manifest import ManifestError
from shoal.cli._output import stderr_console
from shoal.client import Client, server_url
from shoal.errors import APIStatusError, ServerUnreachableError, ShoalError

app = typer.Typer(
    name="shoal",
    help="shoal: run containers on one machine or many, Kubernetes-style.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "SHOAL_DEBUG"
"""Set to 1 to let unexpected exceptions through with their traceback (for bug reports)."""


@dataclass(frozen=True)
class Settings:
    """Options that apply to every command, kept on the click context (``ctx.obj``)."""

    server: str


@app.callback()
def _global_options(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            help="API server URL (default: $SHOAL_SERVER, else http://127.0.0.1:6440).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """shoal: run containers on one machine or many, Kubernetes-style."""
    ctx.obj = Settings(server=server_url(server))


def settings(ctx: typer.Context) -> Settings:
    """The global options, also when a command is invoked without the callback having run
    (a sub-app tested on its own)."""
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings(server=server_url(None))


Job = Callable[[Client], Awaitable[int | None]]


def run(ctx: typer.Context, job: Job) -> None:
    """Run ``job`` with a Client on the configured server; exit with its return code (None
    means 0). Errors end the command with one readable red message and exit code 1."""
    server = settings(ctx).server

    async def main() -> int | None:
        async with Client(server) as client:
            return await job(client)

    code = guarded(lambda: asyncio.run(main()), server)
    if code:
        raise typer.Exit(code)


def guarded(call: Callable[[], int | None], server: str) -> int | None:
    """Call ``call``, translating failures at the CLI boundary (see ``run``)."""
    try:
        return call()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except ShoalError as exc:
        print_error_lines(error_lines(exc, server))
        raise typer.Exit(1) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print_error_lines(
            [
                f"error: unexpected {type(exc).__name__}: {exc}",
                f"  (this is a bug in shoal; run with {DEBUG_ENV}=1 to see the traceback)",
            ]
        )
        raise typer.Exit(1) from None


def error_lines(exc: ShoalError, server: str) -> list[str]:
    """How each kind of failure reads on the terminal."""
    if isinstance(exc, ManifestError):
        lines: list[str] = []
        for problem in exc.problems:
            first, *rest = problem.lines()
            lines += [f"error: {first}", *rest]
        return lines
    if isinstance(exc, ServerUnreachableError):
        return [f"error: cannot reach the API server at {server}: is `shoal up` running?"]
    if isinstance(exc, APIStatusError):
        return api_error_lines(exc)
    return [f"error: {exc}"]


def print_error_lines(lines: list[str]) -> None:
    console = stderr_console()
    for line in lines:
        console.print(line, style="red", markup=False, highlight=False)


def fail(message: str) -> NoReturn:
    """End the command over a usage problem it found itself (exit code 1)."""
    print_error_lines([f"error: {message}"])
    raise typer.Exit(1)

"""The ``shoal`` command: thin argument parsing over ``shoal.client``, rich output.

``app`` is the typer application; importing this package registers every command on it.
More commands are added on the same ``app`` (``from shoal.cli._app import app``), either by
a module whose functions are decorated with ``@app.command()`` and which is imported here,
or by a ``register(app)`` function called here. Commands should do their async work through
``shoal.cli._app.run(ctx, job)`` so that errors print as one line with exit code 1.
"""

from shoal.cli import (  # noqa: F401  (they register commands)
    _commands,
    _describe,
    _exec,
    _image,
    _rollout,
    _run,
    _services,
)
from shoal.cli._app import app

_run.register(app)


def main() -> None:
    """The console-script entry point (``shoal = "shoal.cli:main"``)."""
    app(prog_name="shoal")


__all__ = ["app", "main"]

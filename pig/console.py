"""The one entry-point wrapper of every console script (``pig-export``, ``pig-engine``,
``pig-eval``, the demo training and data tools, ``pig.export.spec_weights``).

Every script runs a click command through :func:`run`, so errors look and exit the same:

- a user error (:class:`pig.errors.PigError`, a bad flag or argument) prints ONE line,
  ``<prog>: error: <what and where>``, on stderr, no traceback, and exits 2 (or the error's
  own ``exit_code``: 3 for a fault of the environment, :class:`pig.errors.EnvironmentFault`);
  a file name in it is shown escaped
  (:func:`~pig.engine.display.display_path`);
- Ctrl-C prints ``<prog>: interrupted`` and exits 130;
- ``--version`` prints ``<prog> X.Y.Z`` (the pig-engine release) and exits 0;
- otherwise the exit code is what the command returns (0 when it returns nothing).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from pig.engine.display import display_path
from pig.errors import EXIT_USER_ERROR, PigError
from pig.version import version

__all__ = ["EXIT_USER_ERROR", "run"]
EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"]}


def run(command: click.Command, argv: list[str] | None, prog_name: str) -> NoReturn:
    """Run ``command`` on ``argv`` (default: ``sys.argv[1:]``) and exit with its code."""
    if not any("--version" in p.opts for p in command.params):
        click.version_option(version(), "--version", prog_name=prog_name,
                             message="%(prog)s %(version)s")(command)
    try:
        code = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except PigError as err:
        click.echo(f"{prog_name}: error: {display_path(str(err))}", err=True)
        code = err.exit_code
    except click.ClickException as err:
        click.echo(f"{prog_name}: error: {display_path(err.format_message())}", err=True)
        code = err.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo(f"{prog_name}: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)

"""Console-script entry points that answer Ctrl-C and SIGTERM cleanly from the first moment.

Python turns Ctrl-C into a ``KeyboardInterrupt`` wherever it lands, including in the middle
of importing numpy or ONNX Runtime, which then fail with tracebacks or "ImportError:
initialization failed". Before importing anything heavy, an entry point here makes SIGINT
and SIGTERM end the program at once with one line and exit 130 / 143. That is safe because
every write the programs make is atomic (a kill leaves the last commit). ``pig-engine``
keeps this for its whole run; its indexing pipeline takes the signals over while it works,
to commit what it encoded first. The other programs hand Ctrl-C back to Python once their
CLI module is imported (``pig-export`` then cleans its staging folder up).
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable

from pig import signals


def _exit_now(prog: str) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        os.write(2, f"{prog}: {signals.said(signum)}\n".encode())
        os._exit(128 + signum)

    return handler


def _run(prog: str, module: str, *, whole_run: bool) -> None:
    for signum in signals.STOP_SIGNALS:
        signal.signal(signum, _exit_now(prog))
    main = importlib.import_module(module).main
    if not whole_run:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    main()


def pig_engine() -> None:
    _run("pig-engine", "pig.cli.engine", whole_run=True)


def pig_export() -> None:
    _run("pig-export", "pig.cli.export", whole_run=False)


def pig_eval() -> None:
    _run("pig-eval", "pig.cli.eval", whole_run=False)

"""One home per rule: the version, the signal handling, the calibrated precisions' passes."""

from __future__ import annotations

import importlib.metadata
import re
import signal
import threading
from pathlib import Path

import pytest

import pig
from pig import signals
from pig.engine.graphs import CALIBRATED_PRECISIONS, CPU_ONLY_PRECISIONS, PRECISION_TABLE

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", pig.__version__)
    assert importlib.metadata.version("pig-engine") == pig.__version__
    setup = (ROOT / "setup.py").read_text()
    assert "version=VERSION" in setup and pig.__version__ not in setup
    written = [p for p in (ROOT / "pig").rglob("*.py")
               if p.name != "__init__.py" and pig.__version__ in p.read_text()]
    assert written == []


def test_every_calibrated_precision_has_one_pass() -> None:
    from pig.calibration.calibrate import PASSES

    assert tuple(PASSES) == CALIBRATED_PRECISIONS
    assert {p.name for p in PRECISION_TABLE if p.cpu_only} == CPU_ONLY_PRECISIONS


def test_handling_restores_the_previous_handlers_and_skips_other_threads() -> None:
    before = [signal.getsignal(s) for s in signals.STOP_SIGNALS]
    got: list[int] = []
    with signals.handling(lambda signum, frame: got.append(signum)):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert got == [signal.SIGTERM, signal.SIGINT]
    assert [signal.getsignal(s) for s in signals.STOP_SIGNALS] == before
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            with signals.handling(lambda signum, frame: None):  # signal.signal would raise
                pass
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert errors == []
    assert signals.said(signal.SIGINT) == "interrupted"
    assert signals.said(signal.SIGTERM) == "terminated"


def test_stop_signals_first_stops_second_raises_after_a_guarded_update() -> None:
    stop = signals.StopSignals()
    with stop.installed():
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt), stop.guarded():
            signal.raise_signal(signal.SIGINT)  # deferred to the end of the update
            finished = True
        assert finished
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)

"""The three kinds of failure: every error class sits in its row of the table in
docs/guarantees.md (exit code, HTTP status), and the CLI exits with its code."""

from __future__ import annotations

import pytest

from pig import errors
from pig.console import run
from pig.engine.serve.budget import TooCostly


@pytest.mark.parametrize(("cls", "exit_code", "http"), [
    (errors.PigError, 2, 400), (errors.CheckpointError, 2, 400), (errors.BundleError, 2, 400),
    (errors.IndexStoreError, 2, 400), (errors.BackendUnavailable, 2, 400), (TooCostly, 2, 422),
    (errors.EnvironmentFault, 3, 503), (errors.IndexDamaged, 3, 503),
    (errors.IndexIOError, 3, 503), (errors.GpuFault, 3, 503),
])
def test_each_error_in_its_row(cls: type[errors.PigError], exit_code: int, http: int) -> None:
    assert (cls.exit_code, cls.http_status) == (exit_code, http)


def test_faults_are_still_caught_as_what_they_are() -> None:
    """A damaged index is an index error and a fault; a missing driver, an unavailable
    backend (``auto`` falls back on it) and a fault."""
    assert issubclass(errors.IndexDamaged, errors.IndexStoreError)
    assert issubclass(errors.GpuFault, errors.BackendUnavailable)


def test_the_cli_exits_with_the_errors_code(capsys: pytest.CaptureFixture[str]) -> None:
    import click

    @click.command()
    def broken() -> None:
        raise errors.IndexDamaged("/x/base.000002.usearch: damaged vectors file")

    with pytest.raises(SystemExit) as stop:
        run(broken, [], "pig-engine")
    err = capsys.readouterr().err
    assert stop.value.code == errors.EXIT_ENVIRONMENT == 3
    assert err == "pig-engine: error: /x/base.000002.usearch: damaged vectors file\n"

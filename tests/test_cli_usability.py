"""The command line as a new user meets it: --version, the short backend line and -v, the
query file on stdin, checks before slow work, modes that follow the umask, errors that name
their fix, and make demo's closing commands in a fresh shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from pig.cli.export import main as export_main
from pig.demo.run import try_it_yourself
from pig.engine.bundle import Bundle
from pig.engine.host.fsutil import make_temp_dir, write_atomic
from tests.test_cli import run
from tests.test_pipeline import clip_dir, fake_bundle

__all__ = ["clip_dir", "fake_bundle"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index(fake_bundle: Bundle, clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    idx = tmp_path_factory.mktemp("usability") / "idx"
    subprocess.run([sys.executable, "-m", "pig.cli.engine", "index", str(clip_dir), "--bundle",
                    str(fake_bundle.dir), "--index", str(idx)], check=True, capture_output=True)
    return idx


def console_scripts() -> list[metadata.EntryPoint]:
    return [ep for ep in metadata.entry_points(group="console_scripts")
            if ep.value.startswith("pig.")]


@pytest.mark.parametrize("script", [ep.name for ep in console_scripts()])
def test_version_on_every_console_script(script: str) -> None:
    ep = next(ep for ep in console_scripts() if ep.name == script)
    module, func = ep.value.split(":")
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = [{script!r}, "
                           f"'--version']; from {module} import {func}; {func}()"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{script} {metadata.version('pig-engine')}\n"


def test_backend_line_is_short_reasons_with_verbose_and_in_info(
        fake_bundle: Bundle, clip_dir: Path, index: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "search", "--index", index, "-q", "a red circle")
    assert code == 0
    assert err.splitlines() == ["backend: onnxruntime cpu fp32 (CPUExecutionProvider)"]
    code, _, err = run(capsys, "search", "--index", index, "-q", "a red circle", "-v")
    backend, why = err.splitlines()
    assert code == 0 and backend.startswith("backend: ") and why.startswith("  why: auto")
    code, _, err = run(capsys, "index", clip_dir, "--bundle", fake_bundle.dir, "--index",
                       tmp_path / "idx")
    assert code == 0 and [ln for ln in err.splitlines() if not ln.startswith("[")] == [
        "decoder: pyav", "backend: onnxruntime cpu fp32 (CPUExecutionProvider)"]
    assert max(len(ln) for ln in err.splitlines()) < 80
    code, out, _ = run(capsys, "info", "--index", index)
    assert code == 0 and re.search(r"^backend +onnxruntime cpu fp32: auto: ", out, re.M)
    code, out, _ = run(capsys, "info", "--index", index, "--json")
    assert json.loads(out)["backend"][0]["backend"] == "onnxruntime"


def test_queries_file_from_stdin(index: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pig.cli.engine", "search", "--index",
                           str(index), "--queries-file", "-", "-k", "2", "--json"],
                          input="a red circle\n\n  hello \n", capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["query"] for line in done.stdout.splitlines()] == [
        "a red circle", "hello"]
    empty = subprocess.run([sys.executable, "-m", "pig.cli.engine", "search", "--index",
                            str(index), "--queries-file", "-"], input="", capture_output=True,
                           text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert empty.returncode == 2 and "no query" in empty.stderr


def _export(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        export_main([str(a) for a in argv])
    return stop.value.code, capsys.readouterr().err


def test_export_checks_out_before_loading(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--out is refused before the checkpoint is even opened (it does not exist here)."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    code, err = _export(capsys, "--onnx", "--checkpoint", tmp_path / "absent.pt",
                        "--out", taken)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"pig-export: error: --out "
                                                                 f"{taken}: already exists")
    assert "give a new folder" in lines[0]


def test_trt_without_precision_graphs_names_calibrate(
        fake_bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _export(capsys, "--trt", "--precision", "fp16", "--out", fake_bundle.dir)
    assert code == 2 and "no fp16 graphs in the bundle; make them with pig-export " \
        f"--calibrate --precision fp16 --out {fake_bundle.dir}" in err


@pytest.fixture
def umask_002() -> Iterator[None]:
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_created_folders_and_files_follow_the_umask(tmp_path: Path, umask_002: None) -> None:
    """A bundle is staged in make_temp_dir and renamed; every manifest and index file is
    written by write_atomic: group-writable under umask 002, as mkdir/open would make them."""
    staged = make_temp_dir(tmp_path, ".bundle.partial-")
    assert stat.S_IMODE(staged.stat().st_mode) == 0o775
    write_atomic(staged / "manifest.json", b"{}")
    assert stat.S_IMODE((staged / "manifest.json").stat().st_mode) == 0o664
    os.umask(0o077)
    assert stat.S_IMODE(make_temp_dir(tmp_path, "x").stat().st_mode) == 0o700


def test_demo_closing_commands_work_in_a_fresh_shell(index: Path) -> None:
    """The lines make demo ends with, pasted into a shell whose PATH has no venv."""
    text = try_it_yourself(index, index)
    commands = [line.strip() for line in text.splitlines()[1:]]
    assert len(commands) == 2 and "source " in text.splitlines()[0]
    for command in commands:
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command],
                              capture_output=True, text=True, cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"]})
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith("query: a large green star"), done.stdout


def test_moved_bundle_error_names_the_fix(fake_bundle: Bundle, clip_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(fake_bundle.dir, bundle)
    code, _, err = run(capsys, "index", clip_dir, "--bundle", bundle, "--index", tmp_path / "i")
    assert code == 0, err
    bundle.rename(tmp_path / "moved")
    code, _, err = run(capsys, "search", "--index", tmp_path / "i", "-q", "a red circle")
    assert code == 2 and err.strip().endswith("if it moved, pass --bundle DIR"), err
    code, _, err = run(capsys, "search", "--index", tmp_path / "i", "-q", "a red circle",
                       "--bundle", tmp_path / "moved")
    assert code == 0, err

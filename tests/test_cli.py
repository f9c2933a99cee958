"""``pig-engine`` commands: exit codes, one-line user errors, output formats."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pig.cli.engine import main
from pig.engine.bundle import Bundle
from pig.engine.ingest import local_runner
from tests import clipgen
from tests.test_index import read_only, snapshot
from tests.test_pipeline import N_CLIPS, clip_dir, fake_bundle, make_clips, other_bundle

__all__ = ["clip_dir", "fake_bundle", "other_bundle"]  # fixtures shared with test_pipeline


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``pig-engine argv`` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def user_error(err: str) -> str:
    """The one error line; asserts there is no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pig-engine: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_files_are_reported_and_the_rest_indexed(fake_bundle: Bundle, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    good = make_clips(folder, n=3)
    bad = {
        clipgen.make_corrupt(good[0], folder / "corrupt.mp4", start=0.02): "",
        clipgen.make_zero_byte(folder / "zero.mp4"): "empty file",
        clipgen.make_audio_only(folder / "audio.m4v"): "no video stream",
        clipgen.make_not_video(folder / "notes.mkv"): "not a readable media file",
    }
    (folder / "readme.txt").write_text("not picked up: unknown extension")
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "index", folder, "--bundle", fake_bundle.dir, "--index", idx,
                         "--batch-size", 2)
    assert code == 1, err
    assert "Traceback" not in err
    assert "7 files: 3 indexed" in out and "4 failed" in out
    for path, reason in bad.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(f"failed: {path}: "))
        assert reason in line

    code, out, _ = run(capsys, "info", "--index", idx, "--json")
    info = json.loads(out)
    assert code == 0 and info["counts"] == {"vectors": 3, "indexed": 3, "failed": 4}
    assert {f["path"] for f in info["failed"]} == {str(p) for p in bad}
    assert info["producers"][0]["bundle"] == str(fake_bundle.dir.resolve())

    # unchanged failures are skipped (exit 0); --retry-failed decodes them again (exit 1)
    code, out, _ = run(capsys, "index", folder, "--bundle", fake_bundle.dir, "--index", idx)
    assert code == 0 and "0 indexed" in out
    code, out, _ = run(capsys, "index", folder, "--bundle", fake_bundle.dir, "--index", idx,
                       "--retry-failed")
    assert code == 1 and "4 failed" in out


def test_search_json_text_and_queries_file(fake_bundle: Bundle, clip_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    code, _, err = run(capsys, "index", clip_dir, "--bundle", fake_bundle.dir, "--index", idx)
    assert code == 0, err
    qfile = tmp_path / "queries.txt"
    qfile.write_text("a red circle\n\n  a blue square  \n")
    code, out, _ = run(capsys, "search", "--queries-file", qfile, "-q", "hello", "--index", idx,
                       "-k", 3, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["query"] for r in rows] == ["hello", "a red circle", "a blue square"]
    for r in rows:
        assert [h["rank"] for h in r["results"]] == [1, 2, 3]
        assert all(Path(h["path"]).parent == clip_dir for h in r["results"])
        assert r["truncated"] is False
    long_query = "a red circle " * fake_bundle.tokenizer_spec.max_length
    code, out, err = run(capsys, "search", "-q", "hello", "-q", long_query, "--index", idx,
                         "--json")
    assert code == 0 and [json.loads(line)["truncated"] for line in out.splitlines()] == [
        False, True]
    assert err.count("note: query 2 is longer than the model's text length") == 1

    code, out, _ = run(capsys, "search", "-q", "hello", "--index", idx, "-k", N_CLIPS + 5,
                       "--exact")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "query: hello" and len(lines) == 1 + N_CLIPS
    cols = [ln.split() for ln in lines[1:]]  # rank, score, segment span, path
    # clips under a second show hundredths
    assert all(re.fullmatch(r"00:00(\.\d\d)?-00:0\d(\.\d\d)?", span) for _, _, span, _ in cols)
    exact = [(float(s), p) for _, s, _, p in cols]
    assert [p for _, p in exact[:3]] == [h["path"] for h in rows[0]["results"]]
    assert [s for s, _ in exact] == sorted((s for s, _ in exact), reverse=True)


def test_remove(fake_bundle: Bundle, clip_dir: Path, tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    run(capsys, "index", clip_dir, "--bundle", fake_bundle.dir, "--index", idx)
    code, out, err = run(capsys, "remove", "--index", idx, clip_dir / "clip00.mp4",
                         tmp_path / "never-indexed.mp4")
    assert code == 1 and out.strip() == f"removed {clip_dir / 'clip00.mp4'}"
    assert f"{tmp_path / 'never-indexed.mp4'}: not in the index" in err
    code, out, _ = run(capsys, "remove", "--index", idx, clip_dir)
    assert code == 0 and len(out.splitlines()) == N_CLIPS - 1
    code, out, _ = run(capsys, "info", "--index", idx, "--json")
    assert json.loads(out)["counts"] == {"vectors": 0, "indexed": 0, "failed": 0}
    code, out, _ = run(capsys, "search", "-q", "anything", "--index", idx)
    assert code == 0 and "(index is empty)" in out
    twin = Path(shutil.copytree(idx, tmp_path / "twin"))
    code, out, _ = run(capsys, "search", "-q", "anything", "--index", idx, "--index", twin)
    assert code == 0 and "(the indexes are empty)" in out


def test_user_errors_are_one_line(fake_bundle: Bundle, other_bundle: Bundle, clip_dir: Path,
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    code, _, err = run(capsys, "search", "-q", "x", "--index", missing)
    assert code == 2 and str(missing) in user_error(err)

    not_index = tmp_path / "plain"
    not_index.mkdir()
    code, _, err = run(capsys, "info", "--index", not_index)
    assert code == 2 and "not a pig-engine index" in user_error(err)

    idx = tmp_path / "idx"
    run(capsys, "index", clip_dir / "clip00.mp4", "--bundle", fake_bundle.dir, "--index", idx)
    code, _, err = run(capsys, "search", "-q", "x", "--index", idx, "--bundle", other_bundle.dir)
    assert code == 2 and "not the model that built the index" in user_error(err)
    code, _, err = run(capsys, "index", clip_dir, "--bundle", other_bundle.dir, "--index", idx)
    assert code == 2 and "not of the given bundle" in user_error(err)

    code, _, err = run(capsys, "index", tmp_path / "no-such-dir", "--bundle", fake_bundle.dir,
                       "--index", idx)
    assert code == 2 and "no such file or folder" in user_error(err)
    code, _, err = run(capsys, "index", clip_dir, "--bundle", tmp_path, "--index", idx)
    assert code == 2 and "manifest.json" in user_error(err)
    code, _, err = run(capsys, "search", "--index", idx)
    assert code == 2 and "no query" in user_error(err)
    code, _, err = run(capsys, "search", "-q", "x", "--index", idx, "-k", 0)
    assert code == 2 and "Traceback" not in err  # click usage error


def test_read_only_index_folder(fake_bundle: Bundle, clip_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """search and info work and write nothing; index and remove are refused with one line,
    index before it opens an encoder."""
    idx, empty = tmp_path / "idx", tmp_path / "empty"
    code, _, err = run(capsys, "index", clip_dir, "--bundle", fake_bundle.dir, "--index", idx)
    assert code == 0, err
    search = ("search", "-q", "a red circle", "-q", "a blue square", "--index", idx, "--json")
    _, writable_out, _ = run(capsys, *search)
    _, writable_info, _ = run(capsys, "info", "--index", idx, "--json")
    empty.mkdir()
    before = snapshot(idx)
    opened: list[str] = []
    real_open = local_runner.open_backend
    monkeypatch.setattr(local_runner, "open_backend",
                        lambda *a, **k: opened.append("encoder") or real_open(*a, **k))
    with read_only(idx), read_only(empty):
        code, out, err = run(capsys, *search)
        assert code == 0, err
        assert out == writable_out and len(out.splitlines()) == 2
        code, out, err = run(capsys, "info", "--index", idx, "--json")
        assert code == 0, err
        assert out == writable_info and json.loads(out)["counts"]["indexed"] == N_CLIPS
        for folder, argv in [
            (idx, ("index", clip_dir, "--bundle", fake_bundle.dir, "--index", idx)),
            (idx, ("remove", "--index", idx, clip_dir)),
            (empty, ("index", clip_dir, "--bundle", fake_bundle.dir, "--index", empty)),
        ]:
            code, out, err = run(capsys, *argv)
            assert code == 2 and out == ""
            assert user_error(err) == (f"pig-engine: error: {folder}: cannot write the index here "
                                       f"({folder} is not writable)")
    assert snapshot(idx) == before and not list(empty.iterdir())
    assert opened == []

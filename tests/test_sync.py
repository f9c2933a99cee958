"""Keeping an index equal to its folders: ``sync`` (moves by content digest, removals, the
mass-removal stop), ``index`` counting what is missing, ``relocate`` and ``info --files``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import index_videos
from pig.engine.query.engine import QueryEngine
from pig.errors import PigError
from tests.test_cli import run, user_error
from tests.test_pipeline import QUERIES, SCORE_TOL, fake_bundle, make_clips

__all__ = ["fake_bundle"]
OPTS = PipelineOptions(batch_size=2)


def vectors_by_key(idx: Path) -> dict[int, np.ndarray]:
    """Each file's score against :data:`QUERIES` (a stand-in for its stored vector)."""
    with QueryEngine(idx) as s:
        rows = s.search(QUERIES, k=100, exact=True)
    out: dict[int, list[float]] = {}
    for hits in rows:
        for h in hits:
            out.setdefault(h.key, []).append(h.score)
    return {k: np.asarray(v) for k, v in out.items()}


def paths_by_key(idx: Path) -> dict[int, str]:
    with VideoIndex.open(idx) as vi:
        return {r.key: r.path for r in vi.records()}


def test_sync_moves_renames_touches_removes_and_adds(fake_bundle: Bundle, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    clips = make_clips(lib, n=5)
    idx = tmp_path / "idx"
    assert index_videos([lib], fake_bundle, idx, options=OPTS).indexed == 5
    keys = {p: k for k, p in paths_by_key(idx).items()}
    before = vectors_by_key(idx)

    (lib / "sub").mkdir()
    renamed = clips[0].rename(lib / "sub" / "renamed.mp4")  # renamed into a subfolder
    clips[1].rename(tmp_path / "outside.mp4")  # moved out of the library
    clips[2].unlink()  # deleted
    st = clips[3].stat()
    os.utime(clips[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    added = make_clips(lib / "new", n=1, offset=7)[0]

    # plain index counts what is gone and names sync (checked on a copy of the index)
    shutil.copytree(idx, tmp_path / "copy")
    code, out, _ = run(capsys, "index", lib, "--bundle", fake_bundle.dir, "--index",
                       tmp_path / "copy")
    assert code == 0
    assert "3 indexed files under these folders are missing on disk: `pig-engine sync`" in out

    report = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True)
    assert (report.moved, report.removed, report.indexed) == (1, 2, 1)  # only `added` encoded
    assert dict(report.skipped) == {"unchanged": 2, "touched": 1}
    after = paths_by_key(idx)
    assert sorted(after.values()) == sorted(map(str, [renamed, clips[3], clips[4], added]))
    assert after[keys[str(clips[0])]] == str(renamed)  # same key: segments and vector kept
    now = vectors_by_key(idx)
    for path in (clips[0], clips[3], clips[4]):
        np.testing.assert_array_equal(now[keys[str(path)]], before[keys[str(path)]])
    with QueryEngine(idx) as s:
        assert {h.path for h in s.search(["x"], k=10)[0]} == set(after.values())
    with VideoIndex.open(idx) as vi:
        assert vi.counts() == {"vectors": 4, "indexed": 4, "failed": 0}
        assert vi.lookup(renamed).size == renamed.stat().st_size

    again = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True)
    assert (again.moved, again.removed, again.indexed) == (0, 0, 0)
    assert dict(again.skipped) == {"unchanged": 4}


def test_sync_swap_and_copy(fake_bundle: Bundle, tmp_path: Path) -> None:
    """Two files that swap names keep their vectors under the new names (nothing encoded);
    a second copy of a file is a new file (encoded), the original stays."""
    lib = tmp_path / "lib"
    a, b = make_clips(lib, n=2)
    idx = tmp_path / "idx"
    index_videos([lib], fake_bundle, idx, options=OPTS)
    keys = {p: k for k, p in paths_by_key(idx).items()}
    a.rename(lib / "tmp.mp4")
    b.rename(a)
    (lib / "tmp.mp4").rename(b)
    report = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True)
    # same paths, other content: each is `changed` unless recognised; sizes differ, so both
    # paths are re-encoded in place (a swap is not a move: both paths still exist)
    assert report.removed == 0 and report.indexed == 2
    assert paths_by_key(idx) == {keys[str(a)]: str(a), keys[str(b)]: str(b)}

    shutil.copy2(a, lib / "copy.mp4")
    report = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True)
    assert (report.moved, report.removed, report.indexed) == (0, 0, 1)


def test_sync_refuses_mass_removal(fake_bundle: Bundle, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    clips = make_clips(lib, n=4)
    idx = tmp_path / "idx"
    index_videos([lib], fake_bundle, idx, options=OPTS)
    gen = VideoIndex.committed_generation(idx)
    for c in clips[:3]:  # 3 of 4 gone: an emptied mount point looks like this
        c.unlink()
    with pytest.raises(PigError, match="3 of its 4 indexed files are missing"):
        index_videos([lib], fake_bundle, idx, options=OPTS, sync=True)
    code, _, err = run(capsys, "sync", lib, "--bundle", fake_bundle.dir, "--index", idx)
    assert code == 2 and "--allow-mass-removal" in user_error(err)
    assert VideoIndex.committed_generation(idx) == gen  # nothing changed
    code, _, err = run(capsys, "index", lib, "--bundle", fake_bundle.dir, "--index", idx,
                       "--allow-mass-removal")
    assert code == 2 and "give it with --sync" in user_error(err)
    code, out, _ = run(capsys, "index", lib, "--bundle", fake_bundle.dir, "--index", idx,
                       "--sync", "--allow-mass-removal")
    assert code == 0 and "0 moved or renamed (kept, not encoded again), 3 removed" in out
    assert list(paths_by_key(idx).values()) == [str(clips[3])]


def test_relocate(fake_bundle: Bundle, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "disk1" / "lib"
    make_clips(old / "a", n=2)
    idx = tmp_path / "idx"
    index_videos([old], fake_bundle, idx, options=OPTS)
    keys = {p: k for k, p in paths_by_key(idx).items()}
    before = vectors_by_key(idx)
    new = tmp_path / "disk2" / "library"

    code, _, err = run(capsys, "relocate", "--from", old, "--to", new, "--index", idx)
    assert code == 2 and "no such file (2 of the 2 new paths are missing)" in user_error(err)
    assert set(paths_by_key(idx).values()) == set(keys)

    shutil.copytree(old, new)  # copytree keeps mtimes; a plain copy would be `touched`
    shutil.rmtree(old)
    code, out, err = run(capsys, "relocate", "--from", old, "--to", new, "--index", idx)
    assert code == 0, err
    assert f"relocated 2 files from {old} to {new}" in out
    moved = paths_by_key(idx)
    for path, key in keys.items():
        assert moved[key] == str(new / Path(path).relative_to(old))
    now = vectors_by_key(idx)
    assert all(np.array_equal(now[k], before[k]) for k in keys.values())
    report = index_videos([new], fake_bundle, idx, options=OPTS, sync=True)
    assert (report.indexed, report.moved, report.removed) == (0, 0, 0)

    code, _, err = run(capsys, "relocate", "--from", old, "--to", new, "--index", idx)
    assert code == 2 and "no indexed file is at or under it" in user_error(err)
    code, out, _ = run(capsys, "relocate", "--from", new, "--to", tmp_path / "gone",
                       "--index", idx, "--no-check")
    assert code == 0 and "relocated 2 files" in out


def test_info_files(fake_bundle: Bundle, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    clips = make_clips(lib, n=2)
    (lib / "bad.mp4").write_bytes(b"not a video")
    idx = tmp_path / "idx"
    index_videos([lib], fake_bundle, idx, options=OPTS)
    code, out, _ = run(capsys, "info", "--index", idx, "--files", "--json")
    assert code == 0
    rows = {r["path"]: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {str(lib / "bad.mp4"), *map(str, clips)}
    for c in clips:
        r = rows[str(c)]
        assert (r["status"], r["segments"], r["size"], r["error"]) == (
            "indexed", 1, c.stat().st_size, None)
        assert r["indexed_at"].endswith("+00:00")
    bad = rows[str(lib / "bad.mp4")]
    assert bad["status"] == "failed" and bad["segments"] == 0 and bad["error"]
    code, out, _ = run(capsys, "info", "--index", idx, "--files")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert any(ln.startswith("indexed ") and ln.endswith(str(clips[0])) for ln in lines)


def test_sync_scores_match_a_fresh_index(fake_bundle: Bundle, tmp_path: Path) -> None:
    """After moves, a synced index answers like one built from scratch on the new layout."""
    lib = tmp_path / "lib"
    clips = make_clips(lib, n=3)
    idx = tmp_path / "idx"
    index_videos([lib], fake_bundle, idx, options=OPTS)
    (lib / "x").mkdir()
    for c in clips:
        c.rename(lib / "x" / c.name)
    report = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True,
                          max_removal=None)
    assert (report.moved, report.indexed) == (3, 0)
    fresh = tmp_path / "fresh"
    index_videos([lib], fake_bundle, fresh, options=OPTS)
    with QueryEngine(idx) as a, QueryEngine(fresh) as b:
        for ha, hb in zip(a.search(QUERIES, k=3, exact=True), b.search(QUERIES, k=3, exact=True),
                          strict=True):
            assert [h.path for h in ha] == [h.path for h in hb]
            np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb],
                                       atol=SCORE_TOL["f16"])


def test_catalog_from_before_etags(fake_bundle: Bundle, tmp_path: Path) -> None:
    """A catalog written before the etag column: readers see None, the first writer adds it
    (nothing else changes), sync and index go on as before."""
    import sqlite3

    lib = tmp_path / "lib"
    clips = make_clips(lib, n=2)
    idx = tmp_path / "idx"
    index_videos([lib], fake_bundle, idx, options=OPTS)
    db = sqlite3.connect(idx / "catalog.sqlite")
    db.execute("ALTER TABLE files DROP COLUMN etag")
    db.commit()
    db.close()
    with VideoIndex.open(idx) as vi:
        assert [r.etag for r in vi.records()] == [None, None]
    clips[0].rename(lib / "moved.mp4")
    report = index_videos([lib], fake_bundle, idx, options=OPTS, sync=True, max_removal=None)
    assert (report.moved, report.indexed) == (1, 0)
    db = sqlite3.connect(idx / "catalog.sqlite")
    assert "etag" in [row[1] for row in db.execute("PRAGMA table_info(files)")]
    db.close()

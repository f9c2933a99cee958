"""The index directory (pig.engine.index): scores, recall, persistence, catalog, atomicity."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.bench_search import recall_at, structured_vectors
from pig.engine.index import Entry, VideoIndex, file_digest
from pig.errors import IndexStoreError

REPO = Path(__file__).resolve().parent.parent
# max |score - numpy inner product of the float32 vectors|; measured at D=512 on structured
# vectors: f32 3.6e-7, f16 5.1e-5, i8 1.2e-3 (per-vector-scaled codes; usearch's own x127
# truncation gives ~1.4e-2)
SCORE_TOL = {"f32": 2e-6, "f16": 2e-4, "i8": 4e-3}


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fake_entries(n: int, prefix: str = "/videos/v") -> list[Entry]:
    return [Entry(f"{prefix}{i}.mp4", 1, 1, "", 8) for i in range(n)]


def make_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip{i}.mp4" for i in range(n)]
    for i, p in enumerate(paths):
        p.write_bytes(bytes([i]) * (100 + i))
    return paths


def create(d: Path, dim: int = 16, **kw) -> VideoIndex:
    return VideoIndex.create(
        d, fingerprint="fp-a", dim=dim, bundle_info={"precision": "fp32"}, **kw
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of every file in ``folder``."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` and its files read-only (555/444) and, since root may write them anyway,
    reported not writable by ``os.access`` (as the kernel does for a read-only mount)."""
    real_access = os.access

    def access(path: str | os.PathLike[str], mode: int, **kw: object) -> bool:
        inside = Path(path).absolute().is_relative_to(folder)
        return not (inside and mode & os.W_OK) and real_access(path, mode, **kw)

    files = list(folder.iterdir())
    for f in files:
        f.chmod(0o444)
    folder.chmod(0o555)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "access", access)
            yield
    finally:
        folder.chmod(0o755)
        for f in files:
            f.chmod(0o644)


def results(idx: VideoIndex, q: np.ndarray, exact: bool) -> list[list[tuple[int, str, float]]]:
    return [[(h.key, h.path, h.score) for h in hits] for hits in idx.search(q, 10, exact=exact)]


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_scores_equal_numpy_inner_products(tmp_path: Path, dtype: str) -> None:
    x, q = structured_vectors(3000, seed=1), structured_vectors(40, seed=2)
    ip = q @ x.T
    true_top = -np.sort(-ip, axis=1)[:, :10]
    with create(tmp_path / "idx", dim=512, dtype=dtype) as idx:
        keys = idx.add(fake_entries(len(x)), x)
        assert keys == list(range(1, len(x) + 1))
        for exact in (True, False):
            hits = idx.search(q, 10, exact=exact)
            scores = np.array([[h.score for h in row] for row in hits])
            ref = np.array([[ip[i, h.key - 1] for h in row] for i, row in enumerate(hits)])
            np.testing.assert_allclose(scores, ref, rtol=0, atol=SCORE_TOL[dtype])
            assert (np.diff(scores, axis=1) <= 0).all()  # best first
            assert all(h.path == f"/videos/v{h.key - 1}.mp4" for row in hits for h in row)
        # exact search returns the true top-10 (up to score ties within the tolerance)
        exact_scores = np.array([[h.score for h in r] for r in idx.search(q, 10, exact=True)])
        np.testing.assert_allclose(exact_scores, true_top, rtol=0, atol=2 * SCORE_TOL[dtype])


@pytest.mark.slow
def test_hnsw_recall_vs_exact(tmp_path: Path) -> None:
    x, q = structured_vectors(10_000, seed=3), structured_vectors(100, seed=4)
    with create(tmp_path / "idx", dim=512) as idx:  # defaults: f16, usearch HNSW settings
        idx.add(fake_entries(len(x)), x)
        found = [[h.key for h in row] for row in idx.search(q, 10, exact=False)]
        exact = np.array([[h.key for h in row] for row in idx.search(q, 10, exact=True)])
    assert recall_at(found, exact) >= 0.99
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10] + 1
    assert recall_at(found, truth) >= 0.98  # f16 storage also reorders near-ties


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_identical_after_save_load_and_view(tmp_path: Path, dtype: str) -> None:
    x, q = structured_vectors(2000, dim=64, seed=5), structured_vectors(30, dim=64, seed=6)
    d = tmp_path / "idx"
    with create(d, dim=64, dtype=dtype) as idx:
        idx.add(fake_entries(len(x)), x)
        idx.remove(["/videos/v7.mp4"])
        idx.commit()
        before = {e: results(idx, q, e) for e in (False, True)}
    for view in (False, True):
        with VideoIndex.open(d, view=view, fingerprint="fp-a") as idx:
            assert idx.counts() == {"vectors": 1999, "indexed": 1999, "failed": 0}
            assert {e: results(idx, q, e) for e in (False, True)} == before


def test_replace_remove_and_failures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = make_files(tmp_path / "videos", 4)
    x, new = unit(rng, 4, 16), unit(rng, 1, 16)
    d = tmp_path / "idx"
    with create(d) as idx:
        keys = idx.add([Entry.from_file(p, frames=10) for p in files], x)
        (k1,) = idx.add([Entry.from_file(files[1], frames=12)], new)  # re-embedded file
        assert k1 == keys[1] and idx.counts()["vectors"] == 4
        top = idx.search(new, 1)[0][0]
        assert (top.key, top.path) == (k1, str(files[1])) and top.score == pytest.approx(
            1, abs=2e-4
        )
        assert all(h.key != k1 for h in idx.search(x[1], 4)[0][:1])
        assert idx.lookup(files[1]).frames == 12
        idx.record_failure(files[2], "corrupt stream")  # a good file that now fails
        assert idx.counts() == {"vectors": 3, "indexed": 3, "failed": 1}
        assert [(r.path, r.error) for r in idx.failed()] == [(str(files[2]), "corrupt stream")]
        assert idx.remove([files[0], tmp_path / "not-indexed.mp4"]) == [str(files[0])]
    with VideoIndex.open(d, writable=True) as idx:
        assert idx.counts() == {"vectors": 2, "indexed": 2, "failed": 1}
        assert {h.key for h in idx.search(x[0], 10)[0]} == {keys[1], keys[3]}
        idx.add([Entry.from_file(files[2], frames=9)], x[2])  # failed -> indexed, same key
        assert idx.lookup(files[2]).key == keys[2] and idx.failed() == []
        assert sorted(idx.remove([tmp_path / "videos"])) == [str(p) for p in files[1:]]
    with VideoIndex.open(d) as idx:
        assert idx.counts() == {"vectors": 0, "indexed": 0, "failed": 0}
        assert idx.search(x[:2], 5) == [[], []]


def test_change_detection(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (f, g) = make_files(tmp_path / "videos", 2)
    with create(tmp_path / "idx") as idx:
        assert idx.plan(f).reason == "new"
        idx.add([Entry.from_file(f, frames=3)], unit(rng, 1, 16))
        idx.record_failure(g, "no video stream")
        assert (idx.plan(f).action, idx.plan(f).reason) == ("skip", "unchanged")
        assert idx.lookup(f).digest == file_digest(f)
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content
        plan = idx.plan(f)
        assert (plan.action, plan.reason, plan.digest) == ("skip", "touched", file_digest(f))
        assert idx.lookup(f).mtime_ns == st.st_mtime_ns + 10**9 and idx.dirty
        assert idx.plan(f).reason == "unchanged"
        f.write_bytes(b"other content")
        plan = idx.plan(f)
        assert (plan.action, plan.reason, plan.digest) == ("embed", "changed", file_digest(f))
        assert (idx.plan(g).action, idx.plan(g).reason) == ("embed", "retry")
        assert (idx.plan(g, retry_failed=False).action) == "skip"
        f.unlink()
        assert idx.plan(f).action == "embed"


def test_refusals(tmp_path: Path) -> None:
    d = tmp_path / "idx"
    rng = np.random.default_rng(2)
    with create(d) as idx:
        for bad, what in [
            (unit(rng, 2, 8), "shape"),
            (2 * unit(rng, 2, 16), "norm"),
            (np.full((2, 16), np.nan, np.float32), "NaN"),
        ]:
            with pytest.raises(IndexStoreError, match=what):
                idx.add(fake_entries(2), bad)
            with pytest.raises(IndexStoreError, match=what):
                idx.search(bad, 3)
        with pytest.raises(IndexStoreError, match="2 entries with 2 segments but 3 vectors"):
            idx.add(fake_entries(2), unit(rng, 3, 16))
        with pytest.raises(IndexStoreError, match="twice"):
            idx.add(fake_entries(1) * 2, unit(rng, 2, 16))
        assert idx.counts() == {"vectors": 0, "indexed": 0, "failed": 0}
    with pytest.raises(IndexStoreError, match=r"fp-a.*fp-b") as err:
        VideoIndex.open(d, fingerprint="fp-b")
    assert str(d) in str(err.value)
    with VideoIndex.open(d) as idx, pytest.raises(IndexStoreError, match="read-only"):
        idx.add(fake_entries(1), unit(rng, 1, 16))
    with pytest.raises(IndexStoreError, match="already exists"):
        create(d)
    with pytest.raises(IndexStoreError, match="dtype=f16, not i8"):
        VideoIndex.open_or_create(d, fingerprint="fp-a", dim=16, bundle_info={}, dtype="i8")
    with VideoIndex.open_or_create(d, fingerprint="fp-a", dim=16, bundle_info={}) as idx:
        assert idx.writable and idx.dtype == "f16" and idx.manifest.usearch["connectivity"] == 16
    with pytest.raises(IndexStoreError, match="connectivity must be an integer >= 2"):
        create(tmp_path / "new", connectivity=1)
    with pytest.raises(IndexStoreError, match="does not exist"):
        VideoIndex.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(IndexStoreError, match=r"no manifest\.json"):
        VideoIndex.open(tmp_path / "plain")
    with pytest.raises(IndexStoreError, match="not empty"):
        create(tmp_path / "plain")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "notes.tmp").write_text("x")  # a user's file, not a commit temp
    with pytest.raises(IndexStoreError, match="not empty"):
        create(tmp_path / "scratch")
    assert (tmp_path / "scratch" / "notes.tmp").read_text() == "x"
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IndexStoreError, match="invalid index manifest"):
        VideoIndex.open(d)


def test_single_writer_lock_and_reader_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = unit(rng, 3, 16)
    d = tmp_path / "idx"
    with create(d) as idx:
        idx.add(fake_entries(1), x[:1])
    writer = VideoIndex.open(d, writable=True, bundle_info={"precision": "int8"})
    with pytest.raises(IndexStoreError, match=f"another process \\(pid {os.getpid()}\\)"):
        VideoIndex.open(d, writable=True)
    reader = VideoIndex.open(d, view=True)
    writer.add(fake_entries(3)[1:], x[1:])
    writer.commit()
    assert reader.counts()["indexed"] == 1  # its snapshot: the commit as of opening
    assert [h.path for h in reader.search(x[0], 5)[0]] == ["/videos/v0.mp4"]
    reader.close()
    writer.close()
    with VideoIndex.open(d, view=True) as idx:
        assert idx.counts()["indexed"] == 3
        assert idx.manifest.bundle_producers == [{"precision": "fp32"}, {"precision": "int8"}]


_CRASH_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from pig.engine.index import Entry, VideoIndex
    d, when, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    x = np.load(sys.argv[4])
    entries = [Entry(f"/v/a{i}.mp4", 1, 1, "", 1) for i in range(5)]
    idx = VideoIndex.create(d, fingerprint="fp", dim=x.shape[1], bundle_info={})
    idx.add(entries, x[:5])
    idx.commit()  # state A
    idx.remove(["/v/a0.mp4"])
    idx.add([entries[1], Entry("/v/b0.mp4", 1, 1, "", 1)], x[5:7])  # state B
    real, calls = os.replace, []
    def dying_replace(src, dst):
        calls.append(dst)
        if when == "before" and len(calls) == n:
            os._exit(3)
        real(src, dst)
        if when == "after" and len(calls) == n:
            os._exit(3)
    os.replace = dying_replace
    idx.commit()
    """
)


@pytest.mark.parametrize(
    ("when", "n", "committed"),
    [("before", 1, False), ("after", 1, False), ("before", 2, True), ("after", 2, True)],
    ids=["before-vectors-rename", "after-vectors-rename", "before-manifest", "after-manifest"],
)
def test_crash_during_commit_leaves_a_consistent_index(
    tmp_path: Path, when: str, n: int, committed: bool
) -> None:
    """The writer process dies at each rename of a commit (os._exit: no cleanup at all)."""
    x = unit(np.random.default_rng(4), 7, 16)
    np.save(tmp_path / "x.npy", x)
    d = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _CRASH_CHILD, str(d), when, str(n), str(tmp_path / "x.npy")]
    assert subprocess.run(args, env=env, check=False).returncode == 3
    expected = (
        {
            "/v/a1.mp4": x[5],
            "/v/a2.mp4": x[2],
            "/v/a3.mp4": x[3],
            "/v/a4.mp4": x[4],
            "/v/b0.mp4": x[6],
        }
        if committed
        else {f"/v/a{i}.mp4": x[i] for i in range(5)}
    )
    for writable in (False, True):  # a reader first (no repair), then a writer (repairs)
        with VideoIndex.open(d, writable=writable) as idx:
            assert idx.generation == (3 if committed else 2)
            assert idx.counts() == {"vectors": len(expected), "indexed": len(expected), "failed": 0}
            for path, v in expected.items():
                top = idx.search(v, 1)[0][0]
                assert top.path == path and top.score == pytest.approx(1, abs=2e-4)
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("vectors")) == [
        f"vectors.{idx.generation:06d}.usearch"
    ]
    assert VideoIndex.open(d).manifest.generation == idx.generation


def test_default_search_scans_small_indexes_and_uses_hnsw_above(tmp_path: Path,
                                                               monkeypatch) -> None:
    from pig.engine.index import store

    rng = np.random.default_rng(5)
    x = unit(rng, 50, 16)
    with create(tmp_path / "i") as idx:
        idx.add(fake_entries(50), x)
        modes: list[bool] = []
        real = idx._vectors.search
        monkeypatch.setattr(idx._vectors, "search",
                            lambda q, k, exact: modes.append(exact) or real(q, k, exact))
        auto_small = idx.search(x[:5], 10)
        monkeypatch.setattr(store, "EXACT_SEARCH_MAX", 49)
        idx.search(x[:5], 10)
        assert modes == [True, False]
        assert auto_small == idx.search(x[:5], 10, exact=True)


def test_read_only_folder_readers_create_nothing_and_writers_are_refused(tmp_path: Path) -> None:
    x = unit(np.random.default_rng(6), 4, 16)
    d = tmp_path / "idx"
    with create(d) as idx:
        idx.add(fake_entries(4), x)
    generation = idx.generation
    before = snapshot(d)
    assert not [n for n in before if n.endswith(("-wal", "-shm"))]  # the writer folded it in
    with VideoIndex.open(d, view=True):  # in a writable folder it takes part in the WAL...
        assert (d / "catalog.sqlite-shm").exists()  # ...so a later writer keeps its snapshot
    assert snapshot(d) == before  # and leaves nothing behind
    with read_only(d):
        for view in (True, False):
            with VideoIndex.open(d, view=view) as idx:
                assert snapshot(d) == before  # not even while open: no -wal, -shm or lock
                assert idx.generation == generation
                assert idx.counts() == {"vectors": 4, "indexed": 4, "failed": 0}
                assert [h.path for h in idx.search(x[2], 1)[0]] == ["/videos/v2.mp4"]
        refused = f"^{re.escape(str(d))}: cannot write the index here \\({re.escape(str(d))} "
        with pytest.raises(IndexStoreError, match=refused):
            VideoIndex.open(d, writable=True)
        with pytest.raises(IndexStoreError, match=refused):
            VideoIndex.open_or_create(d, fingerprint="fp-a", dim=16, bundle_info={})
        with pytest.raises(IndexStoreError, match=f"^{re.escape(str(d / 'new'))}: cannot write"):
            create(d / "new")
    assert snapshot(d) == before


def test_read_only_reader_sees_the_commits_still_in_a_writers_wal(tmp_path: Path) -> None:
    """A writer open elsewhere (live, or crashed: a copy taken while it is open)."""
    x = unit(np.random.default_rng(7), 3, 16)
    d, crashed = tmp_path / "idx", tmp_path / "crashed"
    with create(d) as idx:
        idx.add(fake_entries(1), x[:1])
    writer = VideoIndex.open(d, writable=True)
    try:
        writer.add(fake_entries(3)[1:], x[1:])
        writer.commit()  # in the -wal, not yet in catalog.sqlite
        shutil.copytree(d, crashed)
        for folder in (d, crashed):
            before = snapshot(folder)
            with read_only(folder), VideoIndex.open(folder, view=True) as reader:
                assert reader.generation == writer.generation
                assert reader.counts() == {"vectors": 3, "indexed": 3, "failed": 0}
                assert [h.path for h in reader.search(x[1], 1)[0]] == ["/videos/v1.mp4"]
            assert snapshot(folder) == before
    finally:
        writer.close()

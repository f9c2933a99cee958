"""The indexing pipeline and query path (pig.engine.ingest, pig.engine.query.search) on a tiny
ONNX bundle (tests/fake_bundle.py, CLIP tokenizer spec) and generated clips (tests/clipgen.py).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pig.engine.backends.onnxruntime import OrtBackend
from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest import local_runner
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import index_videos
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.query.engine import QueryEngine
from pig.engine.tokenizer import ClipTokenizer
from tests import clipgen
from tests.fake_bundle import FakeSizes, write_bundle

# The CLIP tokenizer needs CLIP's vocabulary and special ids; frames/size stay tiny.
SIZES = FakeSizes(frames=4, size=32, vocab=49408, length=16)
N_CLIPS = 9
# |search score - numpy inner product of freshly encoded fp32 vectors|. f16 storage rounds each
# component with relative error <= 2**-11, so by Cauchy-Schwarz the score moves <= 2**-11;
# batched vs single-clip encoding adds ~1e-6 (fp32 reduction order).
SCORE_TOL = {"f32": 1e-5, "f16": 2**-11 + 1e-5}
QUERIES = ["a red circle moves to the left", "a big blue square", "hello", "slides right"]


def make_clips(folder: Path, n: int = N_CLIPS, offset: int = 0) -> list[Path]:
    """``n`` distinct small H.264 clips (sizes and lengths vary, so vectors differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        clipgen.make_clip(folder / f"clip{i:02d}.mp4", size=(48 + 8 * ((i + offset) % 5), 40),
                          n_frames=8 + 3 * (i + offset))
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def fake_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b", SIZES))


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Same shapes, other weights: another model fingerprint."""
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "o", SIZES, seed=1))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    make_clips(root)
    return root


def fresh_vectors(bundle: Bundle, paths: list[Path]) -> np.ndarray:
    """Reference: each clip decoded, preprocessed and encoded on its own (batch of one)."""
    enc = OrtBackend(bundle, branches=("video",))
    rows = []
    for p in paths:
        frames = read_video(p, bundle.recipe.num_frames).frames
        rows.append(enc.encode_video(preprocess_frames(frames, bundle.recipe)[None]))
    return np.concatenate(rows)


def text_vectors(bundle: Bundle, texts: list[str]) -> np.ndarray:
    enc = OrtBackend(bundle, branches=("text",))
    return enc.encode_text(ClipTokenizer(bundle.tokenizer_spec).encode(texts))


@pytest.mark.parametrize(("dtype", "batch_size"), [("f32", 4), ("f16", 3)])
def test_scores_equal_numpy_inner_products(fake_bundle: Bundle, clip_dir: Path,
                                           tmp_path: Path, dtype: str, batch_size: int) -> None:
    report = index_videos([clip_dir], fake_bundle, tmp_path / "idx", dtype=dtype,
                          options=PipelineOptions(batch_size=batch_size, workers=2))
    assert (report.files, report.indexed, report.failed) == (N_CLIPS, N_CLIPS, [])
    paths = sorted(clip_dir.glob("*.mp4"))
    expected = text_vectors(fake_bundle, QUERIES) @ fresh_vectors(fake_bundle, paths).T
    with QueryEngine(tmp_path / "idx") as s:
        results = s.search(QUERIES, k=N_CLIPS, exact=True)
    for row, hits in zip(expected, results, strict=True):
        assert len(hits) == N_CLIPS
        got = {h.path: h.score for h in hits}
        want = {str(p): float(v) for p, v in zip(paths, row, strict=True)}
        assert got.keys() == want.keys()
        err = max(abs(got[p] - want[p]) for p in want)
        assert err <= SCORE_TOL[dtype], (dtype, err)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_incremental_touch_change_remove(fake_bundle: Bundle, tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "clips", n=4)
    idx = tmp_path / "idx"
    opts = PipelineOptions(batch_size=2)
    assert index_videos([tmp_path / "clips"], fake_bundle, idx, options=opts).indexed == 4

    again = index_videos([tmp_path / "clips"], fake_bundle, idx, options=opts)
    assert (again.indexed, dict(again.skipped)) == (0, {"unchanged": 4})

    st = clips[0].stat()
    os.utime(clips[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new mtime
    shutil.copyfile(make_clips(tmp_path / "other", n=1, offset=3)[0], clips[1])  # new content
    third = index_videos([tmp_path / "clips"], fake_bundle, idx, options=opts)
    assert third.indexed == 1 and dict(third.skipped) == {"touched": 1, "unchanged": 2}

    with VideoIndex.open(idx) as vi:
        assert vi.counts() == {"vectors": 4, "indexed": 4, "failed": 0}
        key_of = {r.path: r.key for r in vi.records()}
    # the replaced vector is the new content's, under the same key
    q = text_vectors(fake_bundle, QUERIES)
    want = q @ fresh_vectors(fake_bundle, [clips[1]])[0]
    with QueryEngine(idx) as s:
        hits = [next(h for h in row if h.path == str(clips[1]))
                for row in s.search(QUERIES, k=4, exact=True)]
    assert {h.key for h in hits} == {key_of[str(clips[1])]}
    np.testing.assert_allclose([h.score for h in hits], want, atol=SCORE_TOL["f16"])

    with VideoIndex.open(idx, writable=True) as vi:
        assert vi.remove([clips[2]]) == [str(clips[2])]
    with VideoIndex.open(idx) as vi:
        assert vi.counts()["indexed"] == 3 and vi.lookup(clips[2]) is None


class _FailingEncoder:
    """Wraps a backend; raises ``exc`` on the encode call after ``ok`` successful ones."""

    def __init__(self, inner: OrtBackend, ok: int, exc: BaseException) -> None:
        self.inner, self.ok, self.exc = inner, ok, exc
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def encode_video(self, x: np.ndarray) -> np.ndarray:
        if self.ok == 0:
            raise self.exc
        self.ok -= 1
        return self.inner.encode_video(x)

    def video_input_buffers(self, count: int, batch: int) -> list[np.ndarray]:
        return self.inner.video_input_buffers(count, batch)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("exc", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
def test_interrupted_run_keeps_commits_and_resumes(fake_bundle: Bundle, clip_dir: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   exc: BaseException) -> None:
    idx = tmp_path / "idx"
    opts = PipelineOptions(batch_size=2, commit_seconds=0)  # commit after every batch
    real_open = local_runner.open_backend
    monkeypatch.setattr(local_runner, "open_backend",
                        lambda *a, **k: _FailingEncoder(real_open(*a, **k), 2, exc))
    if isinstance(exc, KeyboardInterrupt):
        report = index_videos([clip_dir], fake_bundle, idx, options=opts)
        assert report.interrupted and report.indexed == 4
    else:
        with pytest.raises(RuntimeError, match="encoder crashed"):
            index_videos([clip_dir], fake_bundle, idx, options=opts)
    with VideoIndex.open(idx) as vi:  # the two committed batches survive, nothing else
        assert vi.counts() == {"vectors": 4, "indexed": 4, "failed": 0}

    monkeypatch.setattr(local_runner, "open_backend", real_open)
    rerun = index_videos([clip_dir], fake_bundle, idx, options=opts)
    assert (rerun.indexed, dict(rerun.skipped)) == (N_CLIPS - 4, {"unchanged": 4})
    with VideoIndex.open(idx) as vi:
        assert vi.counts() == {"vectors": N_CLIPS, "indexed": N_CLIPS, "failed": 0}


def test_foreign_bundle_is_refused(fake_bundle: Bundle, other_bundle: Bundle, clip_dir: Path,
                                   tmp_path: Path) -> None:
    from pig.errors import BundleError, IndexStoreError

    idx = tmp_path / "idx"
    index_videos([clip_dir / "clip00.mp4"], fake_bundle, idx)
    with pytest.raises(IndexStoreError, match="not of the given bundle"):
        index_videos([clip_dir / "clip01.mp4"], other_bundle, idx)
    with pytest.raises(BundleError, match="not the model that built the index"):
        QueryEngine(idx, other_bundle.dir)


def test_discover(tmp_path: Path) -> None:
    from pig.engine.media.walk import discover
    from pig.errors import PigError

    for rel in ("a.mp4", "b.MKV", "notes.txt", ".hidden.mp4", "sub/c.webm", "sub/d.mov",
                ".cache/e.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")

    def names(found: list[Path]) -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in found]

    assert names(discover([tmp_path])) == ["a.mp4", "b.MKV", "sub/c.webm", "sub/d.mov"]
    assert names(discover([tmp_path], glob="sub/*")) == ["sub/c.webm", "sub/d.mov"]
    assert names(discover([tmp_path], glob="*.txt")) == ["notes.txt"]
    # an explicit file is always taken (indexing records why it fails); duplicates collapse
    assert names(discover([tmp_path / "notes.txt", tmp_path, tmp_path / "a.mp4"])) == [
        "a.mp4", "b.MKV", "notes.txt", "sub/c.webm", "sub/d.mov"]
    with pytest.raises(PigError, match="no such file or folder"):
        discover([tmp_path / "missing"])


@pytest.fixture
def lock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """``lock(folder)`` makes a folder unlistable: chmod 000 and, where that does not stop us
    (root), an ``os.scandir`` that refuses it as the kernel refuses other users."""
    locked: list[Path] = []
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) in {str(f) for f in locked}:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    def lock_folder(folder: Path) -> None:
        folder.chmod(0)
        locked.append(folder)
        if os.access(folder, os.R_OK):
            monkeypatch.setattr(os, "scandir", scandir)

    yield lock_folder
    for folder in locked:
        folder.chmod(0o755)


def test_discover_unreadable_folders(tmp_path: Path, lock: Callable[[Path], None]) -> None:
    from pig.engine.media.walk import discover
    from pig.errors import PigError

    for rel in ("a.mp4", "sub/c.webm", "sub/private/x.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    private = tmp_path / "sub" / "private"
    lock(private)
    why = f"cannot read the folder ({os.strerror(errno.EACCES)})"
    with pytest.raises(PigError, match=f"^{re.escape(str(private))}: cannot read the folder "):
        discover([tmp_path])
    seen: list[tuple[str, str]] = []
    found = discover([tmp_path, tmp_path / "sub"], on_skip=lambda f, r: seen.append((f, r)))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.mp4", "sub/c.webm"]
    assert seen == [(str(private), why)]  # once, though walked twice
    seen.clear()
    assert discover([private], on_skip=lambda f, r: seen.append((f, r))) == []
    assert seen == [(str(private), why)]


def test_index_reports_unreadable_folder_and_keeps_its_files(
        fake_bundle: Bundle, tmp_path: Path, lock: Callable[[Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    from pig.cli.engine import main

    make_clips(tmp_path / "videos" / "open", n=2)
    make_clips(tmp_path / "videos" / "private", n=2, offset=2)
    idx = tmp_path / "idx"
    assert index_videos([tmp_path / "videos"], fake_bundle, idx).indexed == 4
    private = tmp_path / "videos" / "private"
    lock(private)
    with pytest.raises(SystemExit) as stop:
        main(["index", str(tmp_path / "videos"), "--bundle", str(fake_bundle.dir),
              "--index", str(idx)])
    out, err = capsys.readouterr()
    assert stop.value.code == 1, err
    assert "Traceback" not in err
    assert out.splitlines()[0].startswith("2 files: 0 indexed, 0 failed, 2 skipped")
    assert f"skipped: {private}: cannot read the folder ({os.strerror(errno.EACCES)})" in out
    with VideoIndex.open(idx, view=True) as vi:
        assert vi.counts() == {"vectors": 4, "indexed": 4, "failed": 0}

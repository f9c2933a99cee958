"""Index storage under change and fault: delta + tombstones + compaction, damaged or lost
files, readers racing commits, a full disk, several indexes searched as one."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import Entry, VideoIndex
from pig.engine.index.shards import search_shards
from pig.errors import IndexStoreError
from tests.test_cli import run, user_error
from tests.test_index import REPO, fake_entries, unit
from tests.test_pipeline import clip_dir, fake_bundle, make_clips, other_bundle

__all__ = ["clip_dir", "fake_bundle", "other_bundle"]


def create(d: Path, dim: int = 16, fingerprint: str = "fp-a", **kw) -> VideoIndex:
    return VideoIndex.create(d, fingerprint=fingerprint, dim=dim, bundle_info={}, **kw)


def hits(idx: VideoIndex, q: np.ndarray, exact: bool = True) -> list[list[tuple[str, float]]]:
    return [[(h.path, round(h.score, 5)) for h in row] for row in idx.search(q, 10, exact=exact)]


def recall(got: list[list[str]], exact: list[list[tuple[str, float]]]) -> float:
    """Mean fraction of the exact top-k paths that ``got`` holds, per query."""
    return float(np.mean([len(set(g) & {p for p, _ in e}) / len(e)
                          for g, e in zip(got, exact, strict=True)]))


def test_delta_commits_and_compaction_equal_a_from_scratch_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 300, 16)
    live = {f"/videos/v{i}.mp4": x[i] for i in range(200)}
    d = tmp_path / "idx"
    with create(d, dtype="f32") as idx:
        idx.add(fake_entries(200), x[:200])
    base_file = d / idx.storage()["files"][0]
    def identity(p: Path) -> tuple[int, int, int, int]:  # not atime: reading may move it
        st = p.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    base_stat = identity(base_file)
    with VideoIndex.open(d, writable=True) as idx:
        idx.add(fake_entries(10, "/videos/new"), x[200:210])  # delta
        live |= {f"/videos/new{i}.mp4": x[200 + i] for i in range(10)}
        idx.commit()
        idx.remove([f"/videos/v{i}.mp4" for i in range(5)] + ["/videos/new0.mp4"])  # tombstones
        for i in range(5):
            del live[f"/videos/v{i}.mp4"]
        del live["/videos/new0.mp4"]
        replaced = [Entry(f"/videos/v{i}.mp4", 1, 1, "", 8) for i in (10, 11)]
        replaced.append(Entry("/videos/new1.mp4", 1, 1, "", 8))  # a delta vector replaced
        idx.add(replaced, x[210:213])
        live |= {e.path: x[210 + j] for j, e in enumerate(replaced)}
        idx.record_failure("/videos/v12.mp4", "now broken")
        del live["/videos/v12.mp4"]
        idx.commit()
        st = idx.storage()
        # the base file was not rewritten: commits wrote the delta only
        assert (st["base"], st["delta"], st["tombstones"]) == (200, 11, 8)
        assert base_file.name in st["files"] and identity(base_file) == base_stat
    paths, vecs = list(live), np.stack(list(live.values()))
    with create(tmp_path / "scratch", dtype="f32") as ref:
        ref.add([Entry(p, 1, 1, "", 8) for p in paths], vecs)
    q = np.concatenate([unit(rng, 20, 16), vecs[:5]])
    with VideoIndex.open(tmp_path / "scratch") as ref:
        want = hits(ref, q)
        want_approx = [[p for p, _ in row] for row in hits(ref, q, exact=False)]
    for view in (True, False):
        with VideoIndex.open(d, view=view) as idx:
            assert idx.counts() == {"vectors": len(live), "indexed": len(live), "failed": 1}
            assert hits(idx, q) == want
    with VideoIndex.open(d, writable=True) as idx:
        idx.compact()
        assert idx.storage() | {"files": []} == {
            "base": len(live), "delta": 0, "tombstones": 0, "files": [], "compact_ratio": 0.1}
        assert hits(idx, q) == want
        # HNSW graphs built in another order differ: compare recall against exact search
        approx = [[p for p, _ in row] for row in hits(idx, q, exact=False)]
        assert recall(approx, want) >= max(0.95, recall(want_approx, want) - 0.02)
        # past COMPACT_RATIO a commit compacts on its own
        idx.add(fake_entries(30, "/videos/more"), x[213:243])
        reader = VideoIndex.open(d, view=True)
        idx.commit()
        assert VideoIndex.committed_generation(d) == idx.generation == reader.generation + 1
        reader.close()
        assert (idx.storage()["delta"], idx.storage()["base"]) == (0, len(live) + 30)
    assert sorted(p.name for p in d.iterdir() if ".usearch" in p.name) == idx.storage()["files"]


def test_first_build_commits_its_graph_without_building_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first commit turns the delta into the base as it is: one HNSW construction, and
    the approximate answers are the very ones the graph gave before the commit. A delta that
    had removals is rebuilt (its graph holds removed nodes)."""
    from pig.engine.index import vectors as vectors_mod

    rng = np.random.default_rng(1)
    x, q = unit(rng, 400, 16), unit(rng, 30, 16)
    adds: list[int] = []
    real_add = vectors_mod.VectorStore.add

    def counted(self, keys, x, **kw):  # type: ignore[no-untyped-def]
        adds.append(len(keys))
        real_add(self, keys, x, **kw)

    monkeypatch.setattr(vectors_mod.VectorStore, "add", counted)
    with create(tmp_path / "a", dtype="f16") as idx:
        idx.add(fake_entries(400), x)
        before = hits(idx, q, exact=False)
    assert adds == [400]  # the commit (a compaction: no base yet) added nothing again
    with VideoIndex.open(tmp_path / "a") as idx:
        assert idx.storage()["base"] == 400 and hits(idx, q, exact=False) == before
    adds.clear()
    with create(tmp_path / "b", dtype="f16") as idx:
        idx.add(fake_entries(400), x)
        idx.remove(["/videos/v0.mp4"])
    assert adds == [400, 399]  # rebuilt without the removed vector
    with VideoIndex.open(tmp_path / "b") as idx:
        assert idx.storage()["base"] == 399 and idx.counts()["vectors"] == 399


def test_shards_search_as_one_index_holding_the_union(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, q = unit(rng, 90, 16), unit(rng, 12, 16)
    with create(tmp_path / "all", dtype="f32") as union:
        union.add(fake_entries(90), x)
        want = hits(union, q)
    shards = []
    for s, part in enumerate((range(0, 30), range(30, 75), range(75, 90))):
        with create(tmp_path / f"s{s}", dtype="f32") as idx:
            idx.add([Entry(f"/videos/v{i}.mp4", 1, 1, "", 8) for i in part], x[list(part)])
        shards.append(VideoIndex.open(tmp_path / f"s{s}", view=True))
    with contextlib.ExitStack() as stack:
        for idx in shards:
            stack.enter_context(idx)
        got = [[(h.path, round(h.score, 5)) for h in row] for row in search_shards(shards, q, 10)]
    assert got == want


def test_shards_cli_and_foreign_fingerprint(fake_bundle: Bundle, other_bundle: Bundle,
                                            clip_dir: Path, tmp_path: Path, capsys) -> None:
    clips = sorted(clip_dir.iterdir())
    args = ("--bundle", fake_bundle.dir, "--no-progress")
    assert run(capsys, "index", *clips[:4], "--index", tmp_path / "a", *args)[0] == 0
    assert run(capsys, "index", *clips[4:], "--index", tmp_path / "b", *args)[0] == 0
    assert run(capsys, "index", clip_dir, "--index", tmp_path / "ab", *args)[0] == 0
    query = ("search", "-q", "a red square", "-k", 20, "--json")
    code, both, _ = run(capsys, *query, "--index", tmp_path / "a", "--index", tmp_path / "b")
    assert code == 0

    def rows(out: str) -> list[dict]:  # ids are per index; everything else must be equal
        return [{k: v for k, v in r.items() if k not in ("id", "index")}
                for r in json.loads(out)["results"]]

    union = run(capsys, *query, "--index", tmp_path / "ab")[1]
    assert rows(both) == rows(union) and len(rows(union)) == len(clips)
    # each hit names its index's position in the --index list: the text output too (only with
    # several indexes)
    shard_of = {str(p): int(i >= 4) for i, p in enumerate(clips)}
    assert [h["index"] for h in json.loads(both)["results"]] == [
        shard_of[h["path"]] for h in json.loads(both)["results"]]
    assert {h["index"] for h in json.loads(union)["results"]} == {0}
    text = ("search", "-q", "a red square", "-k", 20)
    lines = run(capsys, *text, "--index", tmp_path / "a", "--index", tmp_path / "b")[1]
    assert [ln.split()[-2:] for ln in lines.splitlines()[1:]] == [
        [f"[{h['index']}]", h["path"]] for h in json.loads(both)["results"]]
    lines = run(capsys, *text, "--index", tmp_path / "ab")[1]
    assert "[" not in lines and len(lines.splitlines()) == 1 + len(clips)
    assert run(capsys, "index", clips[0], "--index", tmp_path / "o", "--bundle",
               other_bundle.dir, "--no-progress")[0] == 0
    code, _, err = run(capsys, *query, "--index", tmp_path / "a", "--index", tmp_path / "o")
    assert code == 2 and "only indexes of one bundle fingerprint" in user_error(err)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_vectors_file_is_one_line_naming_it(fake_bundle: Bundle, clip_dir: Path,
                                                     tmp_path: Path, capsys, damage: str) -> None:
    d = tmp_path / "idx"
    index = ("index", clip_dir, "--bundle", fake_bundle.dir, "--index", d, "--no-progress")
    assert run(capsys, *index)[0] == 0
    (name,) = VideoIndex.open(d).storage()["files"]
    f = d / name
    data = bytearray(f.read_bytes())
    if damage == "garbage":  # a few KiB of garbage inside (usearch itself segfaulted on it)
        mid = len(data) // 2
        data[mid : mid + 4096] = np.random.default_rng(2).bytes(len(data[mid : mid + 4096]))
    else:
        data = data[: len(data) - 100]
    f.write_bytes(bytes(data))
    why = "checksum differs" if damage == "garbage" else f"({len(data)} bytes, "
    for argv in (index, ("search", "-q", "red", "--index", d)):
        code, _, err = run(capsys, *argv)
        line = user_error(err)
        # a fault of the environment, not the user's mistake: exit 3
        assert code == 3 and f"{f}: damaged vectors file" in line and why in line, (argv, err)
    code, out, err = run(capsys, "info", "--index", d)  # info reports the damage, exit 3
    line = next(x for x in out.splitlines() if x.startswith("damaged "))
    assert code == 3 and f"{f}: damaged vectors file" in line and why in line, (out, err)
    assert f.read_bytes() == bytes(data)  # nothing rewritten over the evidence


def test_lost_manifest_is_refused_with_how_to_recover(fake_bundle: Bundle, clip_dir: Path,
                                                      tmp_path: Path, capsys) -> None:
    d = tmp_path / "idx"
    index = ("index", clip_dir, "--bundle", fake_bundle.dir, "--index", d, "--no-progress")
    assert run(capsys, *index)[0] == 0
    before = json.loads(run(capsys, "info", "--index", d, "--json")[1])
    catalog = (d / "catalog.sqlite").read_bytes()
    for broken in ("deleted", b"{not json"):
        if broken == "deleted":
            (d / "manifest.json").unlink()
        else:
            (d / "manifest.json").write_bytes(broken)
        for argv in (index, ("info", "--index", d)):
            code, _, err = run(capsys, *argv)
            line = user_error(err)
            assert code == 3 and "without a readable manifest.json" in line, err
            assert f"pig-engine restore-manifest --index {d}" in line
        assert (d / "catalog.sqlite").read_bytes() == catalog  # never re-initialised
        with pytest.raises(IndexStoreError, match="restore-manifest"):
            VideoIndex.open_or_create(d, fingerprint=fake_bundle.fingerprint, dim=8,
                                      bundle_info={})
        code, out, _ = run(capsys, "restore-manifest", "--index", d)
        assert code == 0 and "restored" in out
        assert json.loads(run(capsys, "info", "--index", d, "--json")[1]) == before


_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from pig.engine.index import Entry, VideoIndex
    from pig.engine.index import store
    store.COMPACT_RATIO = 0.5  # delta commits and compactions both happen
    d, seconds = sys.argv[1], float(sys.argv[2])
    rng = np.random.default_rng(0)
    end, n = time.monotonic() + seconds, 0
    with VideoIndex.open(d, writable=True) as idx:
        while time.monotonic() < end:
            x = rng.standard_normal((5, 16)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            idx.add([Entry(f"/v/{n}-{i}.mp4", 1, 1, "", 1) for i in range(5)], x)
            idx.remove([f"/v/{n - 3}-0.mp4", "/v/seed0.mp4"])
            idx.commit()
            n += 1
    print(n)
    """
)


def test_readers_racing_commits_retry_and_never_fail(tmp_path: Path) -> None:
    d = tmp_path / "idx"
    rng = np.random.default_rng(3)
    with create(d) as idx:
        idx.add(fake_entries(40, "/v/seed"), unit(rng, 40, 16))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(d), "6"], env=env,
                              stdout=subprocess.PIPE, text=True)
    opens, generations, errors = 0, set(), []
    deadline = time.monotonic() + 60
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                with VideoIndex.open(d, view=True) as idx:
                    assert len(idx.search(unit(rng, 1, 16), 5)[0]) == 5
                    generations.add(idx.generation)
                opens += 1
            except IndexStoreError as exc:
                errors.append(str(exc))
    finally:
        writer.kill() if writer.poll() is None else None
        out = writer.communicate(timeout=30)[0]
    assert writer.returncode == 0 and errors == []
    assert int(out) > 20 and len(generations) > 10, (out, opens, len(generations))


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)


def test_full_disk_readers_work_and_writers_name_enospc(fake_bundle: Bundle, clip_dir: Path,
                                                        tmp_path: Path, capsys) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        d = disk / "idx"
        args = ("--bundle", fake_bundle.dir, "--index", d, "--no-progress")
        assert run(capsys, "index", *sorted(clip_dir.iterdir())[:5], *args)[0] == 0
        before = json.loads(run(capsys, "info", "--index", d, "--json")[1])
        query = ("search", "-q", "a red square", "--json", "--index", d)
        want = run(capsys, *query)[1]
        fill(disk)
        files = sorted(p.name for p in d.iterdir())
        assert run(capsys, "info", "--index", d, "--json")[:2] == (0, json.dumps(before) + "\n")
        assert run(capsys, *query)[:2] == (0, want)
        assert sorted(p.name for p in d.iterdir()) == files  # no -wal/-shm left behind
        more = make_clips(tmp_path / "more", n=2)
        code, _, err = run(capsys, "index", *more, *args)
        line = user_error(err)
        assert code == 3 and "no space left on device" in line and str(d) in line, err
        assert json.loads(run(capsys, "info", "--index", d, "--json")[1]) == before


def test_a_create_interrupted_before_its_first_commit_is_created_over(tmp_path: Path) -> None:
    from pig.engine.index.catalog import Catalog

    d = tmp_path / "idx"
    d.mkdir()
    Catalog.create(d / "catalog.sqlite").close()  # generation 0, no manifest yet
    with VideoIndex.open_or_create(d, fingerprint="fp-a", dim=16, bundle_info={}) as idx:
        assert idx.generation == 1 and idx.counts()["indexed"] == 0

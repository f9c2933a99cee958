"""A damaged ``catalog.sqlite``: one line naming it (exit 3, HTTP 503) for every command and
the server, the writer's integrity check, the copy it keeps and ``restore-catalog``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import Entry, VideoIndex
from pig.errors import EXIT_ENVIRONMENT, IndexDamaged, IndexStoreError
from tests.serving import Server, wait_until
from tests.test_cli import run, user_error
from tests.test_index import fake_entries, unit
from tests.test_pipeline import clip_dir, fake_bundle, make_clips

__all__ = ["clip_dir", "fake_bundle"]

TABLES = ("files", "segments", "meta", "tombstones", "sqlite_sequence")


def _garbage(data: bytes) -> bytes:  # what a bad sector or a partial copy leaves
    mid = len(data) // 2
    return data[:mid] + np.random.default_rng(7).bytes(4096) + data[mid + 4096:]


def _other_database(tmp: Path) -> bytes:
    db = sqlite3.connect(tmp / "other.sqlite")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('not an index')")
    db.commit()
    db.close()
    return (tmp / "other.sqlite").read_bytes()


DAMAGE: dict[str, Callable[[bytes, Path], bytes]] = {
    "garbage": lambda data, _: _garbage(data),
    "truncated": lambda data, _: data[: len(data) // 2],
    "zeroed-header": lambda data, _: bytes(100) + data[100:],
    "a-video": lambda _, clips: sorted(clips.glob("*.mp4"))[0].read_bytes(),
    "another-database": lambda _, clips: _other_database(clips.parent),
}


def damage(index: Path, kind: str, clips: Path) -> bytes:
    """Damage ``index``'s catalog (closed by its writer: no ``-wal``) as ``kind``."""
    f = index / "catalog.sqlite"
    assert not Path(f"{f}-wal").exists()
    data = DAMAGE[kind](f.read_bytes(), clips)
    f.write_bytes(data)
    return data


def rows(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    finally:
        db.close()


def names_catalog(line: str, index: Path) -> None:
    assert f"{index / 'catalog.sqlite'}: " in line, line
    assert f"pig-engine restore-catalog --index {index}" in line, line


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_command_says_the_catalog_is_damaged_then_restore_catalog_puts_it_back(
        fake_bundle: Bundle, clip_dir: Path, tmp_path: Path, capsys, kind: str) -> None:
    d = tmp_path / "idx"
    index = ("index", clip_dir, "--bundle", fake_bundle.dir, "--index", d, "--no-progress")
    search = ("search", "-q", "a red square", "--json", "--index", d)
    assert run(capsys, *index)[0] == 0
    info_before = run(capsys, "info", "--index", d, "--json")[1]
    found_before = run(capsys, *search)[1]
    data = damage(d, kind, clip_dir)

    code, out, err = run(capsys, "info", "--index", d)
    assert code == EXIT_ENVIRONMENT and "Traceback" not in err, err
    assert "(DAMAGED)" in out and f"{d / 'catalog.sqlite'}: " in out, out
    assert "last commit generation" in out  # what the manifest says of the last commit
    for argv in (index, ("remove", "--index", d, clip_dir), ("compact", "--index", d),
                 ("restore-manifest", "--index", d), search):
        code, out, err = run(capsys, *argv)
        if argv is search and code == 0:  # the pages a search reads can be intact
            assert out == found_before
            continue
        assert code == EXIT_ENVIRONMENT, (argv, code, err)
        names_catalog(user_error(err), d)
    assert (d / "catalog.sqlite").read_bytes() == data  # nothing written over the evidence

    code, out, err = run(capsys, "restore-catalog", "--index", d)
    assert code == 0 and "restored" in out, err
    assert json.loads(run(capsys, "info", "--index", d, "--json")[1]) == json.loads(info_before)
    assert run(capsys, *search)[1] == found_before
    kept = [p for p in d.iterdir() if p.name.startswith("catalog.sqlite.damaged-")]
    assert [p.read_bytes() for p in kept if not p.name.endswith("-wal")] == [data]
    assert rows(d / "catalog.sqlite") == rows(d / "catalog.sqlite.copy")
    code, out, _ = run(capsys, *index)
    assert code == 0 and ": 0 indexed, 0 failed" in out, out
    code, _, err = run(capsys, "restore-catalog", "--index", d)  # a sound catalog stays
    assert code == 2 and "not damaged" in user_error(err)


def test_the_copy_follows_every_commit_and_keys_are_never_reused(tmp_path: Path) -> None:
    d = tmp_path / "idx"
    rng = np.random.default_rng(0)
    with VideoIndex.create(d, fingerprint="fp", dim=16, bundle_info={}) as idx:
        idx.add(fake_entries(50), unit(rng, 50, 16))
    with VideoIndex.open(d, writable=True) as idx:
        idx.remove(["/videos/v3.mp4", "/videos/v49.mp4"])  # the highest key too
        idx.record_failure("/videos/v4.mp4", "now broken")
        idx.commit()
        idx.add([Entry("/videos/v5.mp4", 2, 2, "x", 8, ((0.0, 1.0), (1.0, 2.0)))],
                unit(rng, 2, 16))
        idx.compact()
        assert rows(d / "catalog.sqlite") == rows(d / "catalog.sqlite.copy")
        idx.add(fake_entries(3, "/videos/pending"), unit(rng, 3, 16))  # never committed
        idx.close()
    assert rows(d / "catalog.sqlite") == rows(d / "catalog.sqlite.copy")
    most = max(k for (k, *_rest) in rows(d / "catalog.sqlite")["segments"])
    (d / "catalog.sqlite").write_bytes(bytes(100) + (d / "catalog.sqlite").read_bytes()[100:])
    generation, _ = VideoIndex.restore_catalog(d)
    with VideoIndex.open(d, writable=True) as idx:
        assert idx.generation == generation and idx.counts()["indexed"] == 47
        (key,) = idx.add(fake_entries(1, "/videos/after"), unit(rng, 1, 16))
        assert key > 50  # AUTOINCREMENT's record came back with the rows
        assert idx.segments_of("/videos/after0.mp4")[0].key > most
    before = rows(d / "catalog.sqlite")
    (d / "catalog.sqlite").unlink()  # lost outright
    with pytest.raises(IndexStoreError, match="catalog is missing; `pig-engine restore-catalog"):
        VideoIndex.open(d)
    VideoIndex.restore_catalog(d)
    assert rows(d / "catalog.sqlite") == before


def test_a_writer_checks_the_catalog_and_remakes_a_lost_or_stale_copy(tmp_path: Path) -> None:
    d = tmp_path / "idx"
    rng = np.random.default_rng(1)
    with VideoIndex.create(d, fingerprint="fp", dim=16, bundle_info={}) as idx:
        idx.add(fake_entries(20), unit(rng, 20, 16))
    copy = d / "catalog.sqlite.copy"
    for spoil in ("lost", "behind", "damaged"):
        if spoil == "lost":
            copy.unlink()
        elif spoil == "behind":  # as a crash between the two commits leaves it
            db = sqlite3.connect(copy)
            db.execute("UPDATE meta SET value = '1' WHERE name = 'generation'")
            db.commit()
            db.close()
        else:
            copy.write_bytes(_garbage(copy.read_bytes()))
        with VideoIndex.open(d, writable=True):
            pass
        assert rows(copy) == rows(d / "catalog.sqlite"), spoil
    copy.unlink()
    (d / "catalog.sqlite").write_bytes(_garbage((d / "catalog.sqlite").read_bytes()))
    with pytest.raises(IndexDamaged, match="quick_check"):  # before anything is changed
        VideoIndex.open(d, writable=True)
    with pytest.raises(IndexStoreError, match="no copy of the catalog is kept here"):
        VideoIndex.restore_catalog(d)


@pytest.fixture
def served_index(fake_bundle: Bundle, tmp_path: Path) -> Path:
    clips = make_clips(tmp_path / "clips", n=3)
    d = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "pig.cli.engine", "index", str(clips[0].parent),
                           "--bundle", str(fake_bundle.dir), "--index", str(d)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return d


def test_the_server_refuses_to_start_on_a_damaged_catalog(served_index: Path) -> None:
    d = served_index
    damage(d, "zeroed-header", d)
    done = subprocess.run([sys.executable, "-m", "pig.cli.engine", "serve", "--port", "0",
                           "--index", str(d)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    names_catalog(user_error(done.stderr), d)


def test_a_served_index_whose_catalog_is_damaged_is_degraded_until_restored(
        served_index: Path, tmp_path: Path, capsys) -> None:
    d = served_index
    body = {"query": "a red square", "k": 3}
    with Server("--index", d, log=tmp_path / "server.log") as s, httpx.Client() as http:
        before = http.post(f"{s.url}/v1/search", json=body).json()["results"]
        f = d / "catalog.sqlite"
        with f.open("r+b") as raw:  # in place, under the server's open connection
            raw.write(bytes(100))

        def ready() -> httpx.Response:
            return http.get(f"{s.url}/v1/health/ready")

        wait_until(lambda: ready().status_code == 503, timeout=30)
        health = ready().json()
        assert health["status"] == "degraded", health
        names_catalog(health["out_of_service"][0]["reason"], d)
        r = http.post(f"{s.url}/v1/search", json=body)
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert r.json()["error"]["type"] == "environment_fault"
        names_catalog(r.json()["error"]["message"], d)
        assert http.post(f"{s.url}/v1/embeddings", json={"input": ["a"]}).status_code == 200

        code, _, err = run(capsys, "restore-catalog", "--index", d)
        assert code == 0, err
        wait_until(lambda: ready().status_code == 200, timeout=30)
        assert http.post(f"{s.url}/v1/search", json=body).json()["results"] == before
    assert "Traceback" not in s.output() and "degraded" in s.output()

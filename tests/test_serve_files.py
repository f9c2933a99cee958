"""Index files changed under ``pig-engine serve`` (real server, real HTTP on loopback): a
served vectors file truncated or overwritten in place, a folder deleted, a folder replaced by
another index with the same generation number. The server never dies or answers 500: the
index is taken out (its searches 503 naming the file, ``ready`` degraded naming it), the
other routes serve on, and it comes back once its folder holds a verified index again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from tests.serving import Server, wait_until
from tests.test_pipeline import fake_bundle, make_clips
from tests.test_serve import build_index

__all__ = ["fake_bundle"]

PICKUP_S = 30.0  # bound on the watcher noticing (it polls every 0.5 s)


@pytest.fixture()
def shards(fake_bundle: Bundle, tmp_path: Path) -> list[Path]:
    clips = make_clips(tmp_path / "clips", n=4)
    return [build_index(fake_bundle, tmp_path / "a", *clips[:2]),
            build_index(fake_bundle, tmp_path / "b", *clips[2:])]


@pytest.fixture()
def server(shards: list[Path], tmp_path: Path) -> Iterator[Server]:
    with Server("--index", shards[0], "--index", shards[1], log=tmp_path / "log") as s:
        yield s
    assert "Traceback" not in s.output() and s.proc.returncode == 0, s.output()


def search(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": "red", "k": 10}, timeout=30)


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/health/ready", timeout=30)


def vectors_file(index: Path) -> Path:
    with VideoIndex.open(index) as idx:
        (name,) = idx.storage()["files"]
    return index / name


def assert_out(server: Server, index: Path, position: int, why: str) -> None:
    """Searches 503 naming the index, ``ready`` degraded naming it, the rest serves on."""
    wait_until(lambda: search(server.url).status_code == 503, PICKUP_S)
    err = search(server.url).json()["error"]
    assert err["type"] == "environment_fault" and str(index) in err["message"] and \
        why in err["message"], err
    r = ready(server.url)
    body = r.json()
    assert r.status_code == 503 and body["status"] == "degraded", body
    assert [(o["index"], o["path"]) for o in body["out_of_service"]] == [(position, str(index))]
    assert why in body["out_of_service"][0]["reason"]
    other = 1 - position
    assert httpx.get(f"{server.url}/v1/videos/1?index={other}").status_code == 200
    r = httpx.get(f"{server.url}/v1/videos/1?index={position}")
    assert r.status_code == 503 and str(index) in r.json()["error"]["message"]
    assert httpx.post(f"{server.url}/v1/embeddings", json={"input": ["red"]},
                      timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/v1/health/live").status_code == 200


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_vectors_file_changed_in_place(server: Server, shards: list[Path],
                                         damage: str) -> None:
    want = search(server.url).json()["results"]
    f = vectors_file(shards[1])
    data = f.read_bytes()
    if damage == "truncate":
        with f.open("r+b") as out:
            out.truncate(len(data) // 3)
    else:
        with f.open("r+b") as out:
            out.seek(len(data) // 2)
            out.write(b"\xff" * 4096)
    assert_out(server, shards[1], 1, f"{f}: changed in place")
    f.write_bytes(data)  # restored (from a backup): verified again and back in service
    wait_until(lambda: search(server.url).status_code == 200, PICKUP_S)
    assert search(server.url).json()["results"] == want
    assert ready(server.url).json()["status"] == "ready"
    assert "taken out of service" in server.output()


def test_a_deleted_folder_is_reported(server: Server, shards: list[Path]) -> None:
    shutil.rmtree(shards[0])
    assert_out(server, shards[0], 0, "the index folder (or its catalog) is gone")


def test_a_folder_replaced_by_another_index_is_reloaded(fake_bundle: Bundle, server: Server,
                                                        shards: list[Path],
                                                        tmp_path: Path) -> None:
    other = build_index(fake_bundle, tmp_path / "c", *make_clips(tmp_path / "more", n=2))
    with VideoIndex.open(other) as a, VideoIndex.open(shards[1]) as b:
        assert a.generation == b.generation and a.commit_id != b.commit_id
    shards[1].rename(tmp_path / "b.old")
    other.rename(shards[1])

    def paths() -> set[str]:
        return {h["path"] for h in search(server.url).json()["results"][0]["results"]}

    wait_until(lambda: any(p.startswith(str(tmp_path / "more")) for p in paths()), PICKUP_S)
    assert ready(server.url).json()["status"] == "ready"

"""``pig-engine serve``: a real server process on a loopback port, spoken to over real HTTP.

Reference answers come from the CLI (``pig-engine search --json``) and the backend
(``encode_text``) on the same index and bundle (the fake bundle of tests/test_pipeline).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pig.engine.backends.onnxruntime import OrtBackend
from pig.engine.bundle import Bundle
from pig.engine.limits import MAX_K, MAX_QUERIES_PER_REQUEST, MAX_QUERY_CHARS
from pig.engine.tokenizer import ClipTokenizer
from tests.serving import Server, wait_until
from tests.test_cli import run, user_error
from tests.test_pipeline import N_CLIPS, QUERIES, fake_bundle, make_clips, other_bundle

__all__ = ["fake_bundle", "other_bundle"]

SCORE_TOL = 1e-6  # fp32 text vectors encoded in batches of another composition (CLI: alone)
PICKUP_S = 2.0  # a committed generation is served within this long (the bound)
SEGMENT_S = 0.4  # window length of the module's index: the clips (0.3-1.3 s) get 1-4 segments
SPLIT = 4  # the module's shards: clips[:SPLIT] in shard 0, the rest in shard 1


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_clips(tmp_path_factory.mktemp("serve_clips"))


def build_index(bundle: Bundle, idx: Path, *paths: Path) -> Path:
    """``pig-engine index PATHS`` into ``idx`` (another process, as while serving)."""
    code = subprocess.run([sys.executable, "-m", "pig.cli.engine", "index", *map(str, paths),
                           "--bundle", str(bundle.dir), "--index", str(idx),
                           "--segment-seconds", str(SEGMENT_S)], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    return idx


@pytest.fixture(scope="module")
def index(fake_bundle: Bundle, clips: list[Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    return build_index(fake_bundle, tmp_path_factory.mktemp("serve") / "idx", clips[0].parent)


@pytest.fixture(scope="module")
def shards(fake_bundle: Bundle, clips: list[Path], tmp_path_factory: pytest.TempPathFactory
           ) -> list[Path]:
    """The clips of ``index`` split between two indexes (same bundle and segmenting)."""
    root = tmp_path_factory.mktemp("serve_shards")
    return [build_index(fake_bundle, root / "a", *clips[:SPLIT]),
            build_index(fake_bundle, root / "b", *clips[SPLIT:])]


@pytest.fixture(scope="module")
def server(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Batches wait up to 100 ms for company, so concurrent requests share encoder calls."""
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with Server("--index", index, "--max-wait-ms", 100, log=log) as s:
        yield s
    assert "Traceback" not in s.output()


@pytest.fixture(scope="module")
def shard_server(shards: list[Path], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve_log") / "shards.log"
    with Server("--index", shards[0], "--index", shards[1], log=log) as s:
        yield s
    assert "Traceback" not in s.output()


def info_json(index: Path) -> dict[str, Any]:
    """``pig-engine info --json`` (another process)."""
    return json.loads(subprocess.run([sys.executable, "-m", "pig.cli.engine", "info", "--index",
                                      str(index), "--json"], capture_output=True, text=True,
                                     check=True).stdout)


def cli_json(capsys: pytest.CaptureFixture[str], index: Path | Sequence[Path], queries: list[str],
             *args: object) -> list[dict[str, Any]]:
    """``pig-engine search --json`` on ``index`` (several: repeated ``--index``)."""
    dirs = [index] if isinstance(index, Path) else index
    code, out, err = run(capsys, "search", *(a for d in dirs for a in ("--index", d)), "--json",
                         *args, *(a for q in queries for a in ("-q", q)))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def assert_same_hits(served: list[dict[str, Any]], cli: list[dict[str, Any]]) -> None:
    """Same queries, fields, order, ranks, paths and ids; scores to ``SCORE_TOL``."""
    assert [list(r) for r in served] == [list(r) for r in cli]
    assert [(r["query"], r["truncated"]) for r in served] == \
        [(r["query"], r["truncated"]) for r in cli]
    for s, c in zip(served, cli, strict=True):
        assert [list(h) for h in s["results"]] == [list(h) for h in c["results"]]
        assert [{**h, "score": None} for h in s["results"]] == \
            [{**h, "score": None} for h in c["results"]]
        np.testing.assert_allclose([h["score"] for h in s["results"]],
                                   [h["score"] for h in c["results"]], rtol=0, atol=SCORE_TOL)


def search(url: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json=body, timeout=30, **kw)


def metric(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_search_equals_cli_json(server: Server, index: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    for args, body in [((), {}), (("-k", 3), {"k": 3}),
                       (("-k", N_CLIPS + 5, "--exact"), {"k": N_CLIPS + 5, "exact": True}),
                       (("-k", 4, "--approximate"), {"k": 4, "exact": False}),
                       (("--group-by", "segment", "-k", 50), {"group_by": "segment", "k": 50}),
                       (("--group-by", "video", "-k", 5), {"group_by": "video", "k": 5})]:
        reference = cli_json(capsys, index, QUERIES, *args)
        r = search(server.url, {"queries": QUERIES, **body})
        assert r.status_code == 200, r.text
        assert_same_hits(r.json()["results"], reference)
        assert {h["index"] for q in r.json()["results"] for h in q["results"]} == {0}
        assert r.json()["generations"] == [r.json()["generation"]]
        if body.get("group_by") == "segment":
            segments = reference[0]["results"]
            assert len(segments) > N_CLIPS and any(h["start_s"] > 0 for h in segments)

    # concurrent single-query requests are batched together and each gets its own answer
    long = " ".join(["a red circle moves to the left"] * 10)  # over the 16-token text length
    reference = cli_json(capsys, index, [long])
    assert reference[0]["truncated"] is True
    assert_same_hits(search(server.url, {"query": long}).json()["results"], reference)

    reference = {q: cli_json(capsys, index, [q], "-k", 5) for q in QUERIES}
    batches, batched = (metric(server.url, f"pig_batch_size_{s}") for s in ("count", "sum"))
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda q: search(server.url, {"query": q, "k": 5}),
                                QUERIES * 4))
    for q, r in zip(QUERIES * 4, replies, strict=True):
        assert r.status_code == 200, r.text
        assert_same_hits(r.json()["results"], reference[q])
    calls = metric(server.url, "pig_batch_size_count") - batches
    texts = metric(server.url, "pig_batch_size_sum") - batched
    assert texts == 16 and calls < 16, (texts, calls)  # fewer encoder calls than requests


def test_embeddings_equal_encode_text(server: Server, fake_bundle: Bundle) -> None:
    texts = ["a red circle moves to the left", "hello", "x" * MAX_QUERY_CHARS]
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": texts}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    tokenizer = ClipTokenizer(fake_bundle.tokenizer_spec)
    ids = tokenizer.encode(texts)
    with OrtBackend(fake_bundle, branches=("text",)) as enc:
        reference = np.concatenate([enc.encode_text(ids[i:i + 1]) for i in range(len(texts))])
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float64)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)
    assert body["model"] == Path(fake_bundle.dir).resolve().name and body["object"] == "list"
    eos = fake_bundle.tokenizer_spec.eos_id
    tokens = sum(int(np.argmax(row == eos)) + 1 for row in ids)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    one = httpx.post(f"{server.url}/v1/embeddings",
                     json={"input": "hello", "model": fake_bundle.fingerprint}, timeout=30)
    assert one.status_code == 200
    np.testing.assert_allclose(one.json()["data"][0]["embedding"], reference[1], atol=1e-6)
    wrong = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hi", "model": "gpt"})
    assert wrong.status_code == 404 and "not served here" in wrong.json()["error"]["message"]


def test_fast_lane_answers_as_fastapi_does(server: Server) -> None:
    """The hot routes answer ``application/json`` in the fast lane (pig/engine/serve/fastlane.py)
    and other JSON types (``+json``) through FastAPI's own handler: the same answers, counted
    under the same route."""
    cases = [("/v1/search", {"queries": QUERIES, "k": 4}),
             ("/v1/search", {"query": QUERIES[0], "group_by": "segment", "exact": True}),
             ("/v1/embeddings", {"input": QUERIES})]
    for path, body in cases:
        before = metric(server.url, f'pig_requests_total{{method="POST",route="{path}",'
                        'status="200"}')
        lane, routed = (httpx.post(server.url + path, content=json.dumps(body).encode(),
                                   headers={"content-type": ctype}, timeout=30).json()
                        for ctype in ("application/json", "application/vnd.pig+json"))
        if path == "/v1/search":
            assert lane["generations"] == routed["generations"]
            assert_same_hits(lane["results"], routed["results"])
        else:
            assert lane["usage"] == routed["usage"] and lane["model"] == routed["model"]
            np.testing.assert_allclose([d["embedding"] for d in lane["data"]],
                                       [d["embedding"] for d in routed["data"]], atol=1e-6)
        after = metric(server.url, f'pig_requests_total{{method="POST",route="{path}",'
                       'status="200"}')
        assert after - before == 2, path


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/json", r.text
    assert "Traceback" not in r.text
    return r.json()["error"]


BAD_SEARCHES: list[tuple[str, Any, int, str]] = [
    ("empty query", {"query": ""}, 422, "query"),
    ("whitespace query", {"query": "  \t "}, 422, "empty"),
    ("query too long", {"query": "x" * (MAX_QUERY_CHARS + 1)}, 422, "at most 4096"),
    ("too many queries", {"queries": ["a"] * (MAX_QUERIES_PER_REQUEST + 1)}, 422, "at most 256"),
    ("empty list", {"queries": []}, 422, "at least 1"),
    ("one empty in list", {"queries": ["ok", " "]}, 422, "queries.1"),
    ("k zero", {"query": "a", "k": 0}, 422, "greater than or equal to 1"),
    ("k too big", {"query": "a", "k": MAX_K + 1}, 422, "less than or equal to 1000"),
    ("k as string", {"query": "a", "k": "5"}, 422, "valid integer"),
    ("k as float", {"query": "a", "k": 5.5}, 422, "valid integer"),
    ("query as number", {"query": 5}, 422, "valid string"),
    ("exact as string", {"query": "a", "exact": "yes"}, 422, "valid boolean"),
    ("both forms", {"query": "a", "queries": ["b"]}, 422, "exactly one"),
    ("neither form", {"k": 3}, 422, "exactly one"),
    ("unknown field", {"query": "a", "top": 3}, 422, "top"),
    ("not an object", ["a"], 422, "valid dictionary"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_SEARCHES,
                         ids=[c[0] for c in BAD_SEARCHES])
def test_bad_search_is_a_4xx_json_error(server: Server, case: str, body: Any, status: int,
                                        message: str) -> None:
    r = search(server.url, body)
    assert r.status_code == status, r.text
    assert message in _error(r)["message"] or message in json.dumps(_error(r)), r.text


def test_malformed_requests_are_4xx_json_errors(server: Server) -> None:
    url = server.url
    post = lambda path, content, ctype="application/json": httpx.post(  # noqa: E731
        url + path, content=content, headers={"content-type": ctype}, timeout=30)
    cases = [
        (post("/v1/search", b'{"query": "a", '), 400, "not valid JSON"),
        (post("/v1/search", b"\xff\xfe not utf-8"), 400, "not valid JSON"),
        (post("/v1/search", b'{"query": "\\ud800"}'), 422, "valid string"),
        (post("/v1/embeddings", b'{"input": "\\udfff tail"}'), 422, "valid string"),
        (post("/v1/search", b"[" * 100_000 + b"]" * 100_000), 400, ""),
        (post("/v1/search", b'{"query": "a"}', "text/plain"), 415, "application/json"),
        (post("/v1/search", b" " * (20 * 2**20)), 413, ""),
        (post("/v1/embeddings", b'{"input": []}'), 422, "at least 1"),
        (post("/v1/embeddings", b'{"input": "a", "encoding_format": "int8"}'), 422, "base64"),
        (httpx.get(url + "/v1/search"), 405, ""),
        (httpx.get(url + "/v1/nothing"), 404, ""),
    ]
    for r, status, message in cases:
        assert r.status_code == status, (r.request.content[:60], r.text[:300])
        assert message in _error(r)["message"], r.text


def test_videos_and_media(server: Server, index: Path, clips: list[Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    url = server.url
    hits = cli_json(capsys, index, ["hello"], "-k", N_CLIPS)[0]["results"]
    by_id = {h["id"]: Path(h["path"]) for h in hits}
    assert sorted(by_id.values()) == sorted(clips)
    vid, path = next(iter(by_id.items()))
    data = path.read_bytes()

    rec = httpx.get(f"{url}/v1/videos/{vid}").json()
    assert rec["id"] == vid and rec["path"] == str(path) and rec["size"] == len(data)
    assert rec["index"] == 0 and httpx.get(f"{url}/v1/videos/{vid}?index=0").json() == rec
    spans = [(g["start_s"], g["end_s"]) for g in rec["segments"]]
    assert spans and spans[0][0] == 0 and spans == sorted(spans)
    assert rec["duration_s"] == spans[-1][1]
    assert rec["media"] == f"/v1/videos/{vid}/media?index=0"
    for suffix in ("", "/media"):  # one index: ?index= may be left out; 1 is not served
        r = httpx.get(f"{url}/v1/videos/{vid}{suffix}?index=1")
        assert r.status_code == 404 and _error(r)["message"] == \
            "no index 1: this server serves 1 (?index=0..0)"

    media = f"{url}/v1/videos/{vid}/media"
    full = httpx.get(media)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/mp4" and full.headers["accept-ranges"] == "bytes"
    n = len(data)
    for rng, start, end in [("bytes=0-9", 0, 10), ("bytes=100-", 100, n), ("bytes=-7", n - 7, n),
                            (f"bytes={n - 3}-{n + 50}", n - 3, n)]:
        r = httpx.get(media, headers={"Range": rng})
        assert r.status_code == 206 and r.content == data[start:end], rng
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{n}"
    r = httpx.get(media, headers={"Range": f"bytes={n}-{n + 10}"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
    _error(r)
    r = httpx.get(media, headers={"Range": "bytes=abc"})
    assert r.status_code == 400 and "Range" in _error(r)["message"]

    # Only catalog files, by catalog id: every id and path trick gets an error or exactly the
    # bytes of the catalog file with that id, never anything else.
    outside = path.parent / "not-indexed.mp4"
    outside.write_bytes(b"SECRET" * 100)
    tricks = [*map(str, range(-3, N_CLIPS + 5)), str(2**63), str(2**63 - 1), "9" * 40, "abc",
              "1.0", "1e3", "0x1", "%2e%2e", "..", "..%2F..%2Fetc%2Fpasswd",
              f"{vid}%2F..%2F..%2F{outside.name}", "%00", f"{vid}%00", f"{vid}/..",
              "-0", "+1", " 1", "1 "]
    conn = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=10)
    for trick in tricks:
        for suffix in ("", "/media"):
            raw = f"/v1/videos/{trick.replace(' ', '%20')}{suffix}"
            conn.request("GET", raw)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200 and suffix:
                got_id = int(trick.strip())
                assert body == by_id[got_id].read_bytes(), raw
            elif resp.status == 200:
                assert json.loads(body)["path"] in map(str, by_id.values()), raw
            else:
                assert 400 <= resp.status < 500, (raw, resp.status)
                assert b"Traceback" not in body and b"SECRET" not in body
                json.loads(body)
            assert b"SECRET" not in body and b"root:" not in body
    conn.close()

    # a touched file (same content, new mtime) is still served; one whose content changed
    # (same size, or another size) or that vanished since indexing is not
    st, content = path.stat(), path.read_bytes()
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        r = httpx.get(media)
        assert r.status_code == 200 and r.content == content
        flipped = bytearray(content)
        flipped[-1] ^= 0xFF
        for changed in (bytes(flipped), content + b"x"):
            path.write_bytes(changed)
            r = httpx.get(media)
            assert r.status_code == 410 and "changed since it was indexed" in _error(r)["message"]
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        outside.unlink()
    assert httpx.get(media).status_code == 200


def test_media_head_and_a_file_swapped_in(server: Server, index: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """HEAD gives the headers of GET; a file put in place of the catalogued one (a symlink
    to a copy with the same size and mtime but other bytes) is refused, the original served
    again once it is back."""
    hit = cli_json(capsys, index, ["hello"], "-k", 1)[0]["results"][0]
    path, media = Path(hit["path"]), f"{server.url}/v1/videos/{hit['id']}/media"
    data = path.read_bytes()
    head, get = httpx.head(media), httpx.get(media)
    assert head.status_code == 200 and head.content == b""
    assert {k: head.headers[k] for k in ("content-length", "content-type", "etag")} == \
        {k: get.headers[k] for k in ("content-length", "content-type", "etag")}
    st = path.stat()
    moved = path.with_name(path.name + ".orig")
    fake = path.with_name(path.name + ".fake")
    fake.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.utime(fake, ns=(st.st_atime_ns, st.st_mtime_ns))
    path.rename(moved)
    try:
        path.symlink_to(fake)
        assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
        for r in (httpx.get(media), httpx.head(media)):
            assert r.status_code == 410, r.status_code
    finally:
        path.unlink(missing_ok=True)
        moved.rename(path)
        fake.unlink()
    assert httpx.get(media).content == data


def test_health_metrics_openapi_page(server: Server, index: Path) -> None:
    url = server.url
    assert httpx.get(f"{url}/v1/health/live").json() == {"status": "live", "generation": None,
                                                         "vectors": None, "model": None,
                                                         "out_of_service": None}
    ready = httpx.get(f"{url}/v1/health/ready").json()
    info = info_json(index)
    assert ready["status"] == "ready" and ready["vectors"] == info["counts"]["vectors"] > N_CLIPS
    assert ready["generation"] == info["generation"]
    search(url, {"query": "warm"})
    text = httpx.get(f"{url}/metrics").text
    for name in ('pig_requests_total{method="POST",route="/v1/search",status="200"}',
                 'pig_stage_seconds_count{stage="tokenize"}',
                 'pig_stage_seconds_count{stage="encode"}',
                 'pig_stage_seconds_count{stage="search"}', "pig_batch_size_count",
                 "pig_queue_depth", f'pig_index_vectors{{index="0"}} {float(ready["vectors"])}',
                 f'pig_index_generation{{index="0"}} {float(ready["generation"])}',
                 'pig_request_seconds_bucket{le="0.5",route="/v1/search"}'):
        assert name in text, name
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/search", "/v1/embeddings", "/v1/videos/{video_id}",
            "/v1/videos/{video_id}/media", "/v1/health/live", "/v1/health/ready",
            "/metrics"} <= set(spec["paths"])
    assert "SearchRequest" in spec["components"]["schemas"]
    assert httpx.get(f"{url}/docs").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and 'id="player"' in page.text
    assert httpx.get(f"{url}/static/app.js").status_code == 200


def test_auth(index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    with Server("--index", index, "--api-key-file", key_file, log=tmp_path / "log") as s:
        good = {"Authorization": "Bearer s3cret-key"}
        for path, method in [("/v1/search", "POST"), ("/v1/embeddings", "POST"),
                             ("/v1/videos/1", "GET"), ("/v1/videos/1/media", "GET"),
                             ("/metrics", "GET")]:
            body = {"query": "a"} if path == "/v1/search" else {"input": "a"}
            kw: dict[str, Any] = {"json": body} if method == "POST" else {}
            for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"},
                            {"Authorization": "Bearer s3cret-key-and-more"},
                            {"Authorization": "Basic czNjcmV0LWtleQ=="}]:
                r = httpx.request(method, s.url + path, headers=headers, timeout=30, **kw)
                assert r.status_code == 401, (path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer" and _error(r)["type"] == (
                    "authentication_error" if path == "/v1/embeddings" else "unauthorized")
            r = httpx.request(method, s.url + path, headers=good, timeout=30, **kw)
            assert r.status_code == 200, (path, r.text)
        # the page's <video> element sends the key as a cookie: accepted for media only
        cookie = {"Cookie": "pig_api_key=s3cret-key"}
        assert httpx.get(s.url + "/v1/videos/1/media", headers=cookie).status_code == 200
        assert search(s.url, {"query": "a"}, headers=cookie).status_code == 401
        for public in ("/v1/health/live", "/v1/health/ready", "/", "/openapi.json"):
            assert httpx.get(s.url + public).status_code == 200, public
    assert "s3cret" not in s.output()

    # without a key, only loopback addresses may be bound; bad key files are one line
    code, _, err = run(capsys, "serve", "--index", index, "--host", "0.0.0.0")
    assert code == 2 and "--api-key-file" in err and "Traceback" not in err
    (tmp_path / "empty").write_text(" \n")
    code, _, err = run(capsys, "serve", "--index", index, "--api-key-file", tmp_path / "empty")
    assert code == 2 and "the API key file is empty" in err
    code, _, err = run(capsys, "serve", "--index", index, "--api-key-file", tmp_path / "nope")
    assert code == 2 and "cannot read the API key" in err


def test_full_queue_is_503_with_retry_after(index: Path, tmp_path: Path) -> None:
    """One request waits (up to 1 s for company); the queue holds one: the next are 503."""
    with Server("--index", index, "--max-queue", 1, "--max-batch", 1000, "--max-wait-ms", 1000,
                log=tmp_path / "log") as s:
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(search(s.url, {"query": "first"})))
        t.start()
        wait_until(lambda: metric(s.url, "pig_queue_depth") == 1, 10)
        rejected = [search(s.url, {"query": f"q{i}"}) for i in range(3)]
        t.join()
        assert first[0].status_code == 200
        for r in rejected:
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert _error(r)["type"] == "overloaded"
        assert search(s.url, {"query": "later"}).status_code == 200


def test_serve_needs_the_extra_only_to_serve(index: Path) -> None:
    """The runtime imports without the extra; ``serve`` without it says how to install it."""
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'fastapi' else real(n, *a)\n"
        "sys.modules['fastapi'] = None\n"
        "from pig.cli.engine import main\n"
        "import pig.engine.query.search, pig.engine.serve\n"
        f"main(['serve', '--index', {str(index)!r}])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("pig-engine: error: `pig-engine serve` needs fastapi: pip install"
                                " 'pig-engine[serve]' (or: pip install '.[serve]' in a checkout)")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_requests_and_exits_0(index: Path, tmp_path: Path,
                                                      sig: signal.Signals,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The request in flight when the signal arrives (held 1 s by the batch wait) completes
    with the right answer; then the port is closed and the process exits 0."""
    reference = cli_json(capsys, index, ["in flight"], "-k", 3)
    s = Server("--index", index, "--max-wait-ms", 1000, "--max-batch", 1000,
               log=tmp_path / "log")
    reply: list[httpx.Response] = []
    t = threading.Thread(target=lambda: reply.append(search(s.url, {"query": "in flight",
                                                                     "k": 3})))
    t.start()
    wait_until(lambda: metric(s.url, "pig_queue_depth") == 1, 10)
    s.signal(sig)
    t.join(30)
    assert reply and reply[0].status_code == 200, s.output()
    assert_same_hits(reply[0].json()["results"], reference)
    assert s.wait(30) == 0, s.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/v1/health/live")
    assert "Traceback" not in s.output()
    s.stop()


def test_live_pickup_of_concurrent_index_and_remove(fake_bundle: Bundle, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """While ``pig-engine index`` commits generations from another process, queries keep
    succeeding, each answered from one committed generation; the last commit is served
    within PICKUP_S of the indexer's exit, and so is a ``remove``."""
    first, more = make_clips(tmp_path / "a", n=3), make_clips(tmp_path / "b", n=24, offset=3)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "pig.cli.engine", "index", "--bundle", str(fake_bundle.dir),
           "--index", str(idx)]
    subprocess.run([*cmd, str(first[0].parent)], check=True, capture_output=True)
    known = {str(p) for p in first + more}
    with Server("--index", idx, log=tmp_path / "log") as s:
        answers: list[tuple[int, list[dict[str, Any]]]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                r = search(s.url, {"query": "moving box", "k": 100, "exact": True})
                assert r.status_code == 200, r.text
                answers.append((r.json()["generation"], r.json()["results"][0]["results"]))

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            subprocess.run([*cmd, str(more[0].parent), "--batch-size", "1", "--commit-every",
                            "0", "--workers", "1"], check=True, capture_output=True)
            done = time.monotonic()
            final = json.loads(run(capsys, "info", "--index", idx, "--json")[1])["generation"]
            wait_until(lambda: answers and answers[-1][0] == final, 10, every=0.01)
            pickup = time.monotonic() - done
        finally:
            stop.set()
            poller.join()
        assert pickup <= PICKUP_S, pickup
        gens = [g for g, _ in answers]
        # the first and the last generation at least (intermediate ones when the indexer
        # outlasts a poll interval; each answer must be one generation's state either way)
        assert gens == sorted(gens) and len(set(gens)) >= 2, gens
        sizes: dict[int, int] = {}
        for g, hits in answers:
            paths = [h["path"] for h in hits]
            assert len(set(paths)) == len(paths) and set(paths) <= known
            assert {str(p) for p in first} <= set(paths)
            assert sizes.setdefault(g, len(paths)) == len(paths)  # one generation, one state
        assert sizes[final] == len(known)
        served = search(s.url, {"query": "moving box", "k": 100, "exact": True}).json()
        assert_same_hits(served["results"],
                         cli_json(capsys, idx, ["moving box"], "-k", 100, "--exact"))

        gone = next(h for h in served["results"][0]["results"] if h["path"] == str(more[2]))
        assert httpx.get(f"{s.url}/v1/videos/{gone['id']}").status_code == 200
        subprocess.run([*cmd[:3], "remove", "--index", str(idx), str(more[2])], check=True,
                       capture_output=True)
        wait_until(lambda: httpx.get(f"{s.url}/v1/videos/{gone['id']}").status_code == 404,
                   PICKUP_S, every=0.01)
        hits = search(s.url, {"query": "moving box", "k": 100}).json()["results"][0]["results"]
        assert str(more[2]) not in {h["path"] for h in hits} and len(hits) == len(known) - 1
    assert "Traceback" not in s.output()


def test_shards_answer_as_the_cli_and_as_their_union(
        shard_server: Server, shards: list[Path], index: Path, clips: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two shards served: the hits of ``search --json --index A --index B`` (each with its
    shard's position), and those of one index holding both shards' files."""
    shard_of = {str(p): int(i >= SPLIT) for i, p in enumerate(clips)}
    seen: set[int] = set()
    for args, body in [((), {}), (("-k", 3), {"k": 3}),
                       (("-k", N_CLIPS + 5, "--exact"), {"k": N_CLIPS + 5, "exact": True}),
                       (("--group-by", "segment", "-k", 50), {"group_by": "segment", "k": 50})]:
        r = search(shard_server.url, {"queries": QUERIES, **body})
        assert r.status_code == 200, r.text
        served = r.json()["results"]
        assert_same_hits(served, cli_json(capsys, shards, QUERIES, *args))
        for s, u in zip(served, cli_json(capsys, index, QUERIES, *args), strict=True):
            # the same hits with the same scores, best first (so in the same order but for
            # equal scores, which the union orders its own way: same-size clips tie here)
            got, want = ({(h["path"], h["start_s"], h["end_s"], h["segment"]): h["score"]
                          for h in r["results"]} for r in (s, u))
            assert list(got) == sorted(got, key=got.__getitem__, reverse=True)
            assert got.keys() == want.keys() and len(got) == len(s["results"])
            np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=0,
                                       atol=SCORE_TOL)
            assert [h["index"] for h in s["results"]] == [shard_of[h["path"]]
                                                          for h in s["results"]]
            seen |= {h["index"] for h in s["results"]}
    assert seen == {0, 1}
    infos = [info_json(d) for d in shards]
    gens = [i["generation"] for i in infos]
    assert r.json()["generations"] == gens and r.json()["generation"] == gens[0]
    ready = httpx.get(f"{shard_server.url}/v1/health/ready").json()
    assert ready["generation"] == gens[0]
    assert ready["vectors"] == sum(i["counts"]["vectors"] for i in infos) == \
        info_json(index)["counts"]["vectors"]
    text = httpx.get(f"{shard_server.url}/metrics").text
    for i, g in enumerate(gens):
        assert f'pig_index_generation{{index="{i}"}} {float(g)}' in text
    assert metric(shard_server.url, "pig_index_vectors") == ready["vectors"]


def test_shard_videos_need_the_hit_index(shard_server: Server, shards: list[Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = shard_server.url
    hits = cli_json(capsys, shards, ["hello"], "-k", N_CLIPS)[0]["results"]
    # an id that both shards hold, so that the wrong shard would give another file
    hit = next(h for h in hits if h["index"] == 1 and {h["id"]} & {o["id"] for o in hits
                                                                  if o["index"] == 0})
    other = next(o for o in hits if o["index"] == 0 and o["id"] == hit["id"])
    vid = hit["id"]
    for h in (hit, other):
        rec = httpx.get(f"{url}/v1/videos/{vid}", params={"index": h["index"]}).json()
        assert (rec["id"], rec["index"], rec["path"]) == (vid, h["index"], h["path"])
        assert rec["media"] == f"/v1/videos/{vid}/media?index={h['index']}"
        media = httpx.get(url + rec["media"])
        assert media.status_code == 200 and media.content == Path(h["path"]).read_bytes()
    assert hit["path"] != other["path"]
    for suffix in ("", "/media"):
        r = httpx.get(f"{url}/v1/videos/{vid}{suffix}")
        assert r.status_code == 400 and _error(r)["message"] == \
            "several indexes are served: give ?index=N (the hit's index field)"
        r = httpx.get(f"{url}/v1/videos/{vid}{suffix}?index=5")
        assert r.status_code == 404 and _error(r)["message"] == \
            "no index 5: this server serves 2 (?index=0..1)"
        for bad in ("-1", "1.0", "x"):
            assert httpx.get(f"{url}/v1/videos/{vid}{suffix}?index={bad}").status_code == 422
    r = httpx.get(f"{url}/v1/videos/{10**6}?index=1")
    assert r.status_code == 404 and _error(r)["message"] == \
        f"no indexed video with id {10**6} in index 1"


def test_commit_into_one_shard_is_picked_up(fake_bundle: Bundle, shards: list[Path],
                                            tmp_path: Path) -> None:
    """``pig-engine index`` commits into shard 1 while it is served: its new video is found
    within PICKUP_S; shard 0 serves its generation all along."""
    dirs = [Path(shutil.copytree(d, tmp_path / d.name)) for d in shards]
    new = make_clips(tmp_path / "new", n=1, offset=N_CLIPS)[0]
    body = {"query": "moving box", "k": 100, "exact": True}
    with Server("--index", dirs[0], "--index", dirs[1], log=tmp_path / "log") as s:
        before = search(s.url, body).json()
        build_index(fake_bundle, dirs[1], new)
        wait_until(lambda: str(new) in {h["path"] for h in
                                        search(s.url, body).json()["results"][0]["results"]},
                   PICKUP_S, every=0.01)
        after = search(s.url, body).json()
        assert after["generations"] == [before["generations"][0],
                                      info_json(dirs[1])["generation"]]
        assert after["generations"][1] > before["generations"][1]
        unranked = lambda r, i: [{**h, "rank": None} for h in  # noqa: E731
                                 r["results"][0]["results"] if h["index"] == i]
        assert unranked(after, 0) == unranked(before, 0) != []
        (found,) = (h for h in after["results"][0]["results"] if h["path"] == str(new))
        assert found["index"] == 1
        rec = httpx.get(f"{s.url}/v1/videos/{found['id']}?index=1").json()
        assert rec["path"] == str(new)
        text = httpx.get(f"{s.url}/metrics").text
        assert f'pig_index_generation{{index="1"}} {float(after["generations"][1])}' in text
        assert 'pig_index_reloads_total{index="1",outcome="ok"}' in text
        assert 'pig_index_reloads_total{index="0"' not in text  # shard 0 never reopened
    assert "Traceback" not in s.output()
    assert f"{dirs[1]}: now serving generation {after['generations'][1]}" in s.output()


def test_shards_of_other_models_are_refused(other_bundle: Bundle, index: Path,
                                            clips: list[Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    other = build_index(other_bundle, tmp_path / "other", clips[0])
    code, out, err = run(capsys, "serve", "--index", index, "--index", other, "--port", 0)
    line = user_error(err)
    assert code == 2 and out == "" and str(index) in line and str(other) in line
    assert "only indexes of one bundle fingerprint" in line


FUZZ_EXAMPLES = 12  # per operation and generation mode (~200 requests in all)


def test_openapi_fuzzing_never_gets_a_5xx(server: Server) -> None:
    """schemathesis: valid and invalid requests generated from /openapi.json, bounded; every
    answer is below 500 and matches the documented response schema."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    spec = httpx.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14  # preview, rendition.mp4 and HEAD on media included
    before = metric(server.url, "pig_requests_total")
    for op in operations:
        inputs = spec["paths"][op.path][op.method.lower()].keys() & {"parameters", "requestBody"}
        modes = list(schemathesis.GenerationMode)[:2 if inputs else 1]  # positive, negative
        for mode in modes:
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=server.url, timeout=30,
                                       checks=[not_a_server_error, response_schema_conformance])

            check()
    assert metric(server.url, "pig_requests_total") - before > 5 * FUZZ_EXAMPLES


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_search_page_in_a_real_browser(server: Server, index: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Debian's chromium, headless, driven by Playwright: type a query, see the hits, and a
    player whose source is the top hit's media and whose position is the hit's start.
    ``PIG_SERVE_SCREENSHOT=FILE`` keeps a screenshot of the page."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    # a query whose best hit starts inside its file, so the start position means something
    query, top = next((q, r["results"]) for q in [*QUERIES, "moving box", "slides left"]
                      for r in cli_json(capsys, index, [q], "-k", 10)
                      if r["results"][0]["start_s"] > 0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(server.url + "/")
            page.fill("#query", query)
            page.press("#query", "Enter")
            page.wait_for_selector("#results li")
            items = page.locator("#results li")
            assert items.count() == len(top)
            assert [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.videoId)")] \
                == [h["id"] for h in top]
            assert items.first.locator(".score").inner_text() == f"{top[0]['score']:.4f}"
            player = page.locator("#player")
            page.wait_for_function("document.querySelector('#player').readyState >= 1")
            start = top[0]["start_s"]
            src, position = player.evaluate("v => [v.currentSrc, v.currentTime]")
            assert src == f"{server.url}/v1/videos/{top[0]['id']}/media?index=0#t={start:g}"
            assert position == pytest.approx(start, abs=0.05)
            # choosing another hit plays that one from its start
            items.nth(2).click()
            page.wait_for_function(
                f"document.querySelector('#player').dataset.videoId === '{top[2]['id']}'")
            assert player.evaluate("v => v.src").endswith(f"/v1/videos/{top[2]['id']}/media"
                                                          f"?index=0#t={top[2]['start_s']:g}")
            if shot := os.environ.get("PIG_SERVE_SCREENSHOT"):
                page.screenshot(path=shot)
        finally:
            browser.close()

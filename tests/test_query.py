"""The query engine (pig.engine.query): one request object answered alike by the CLI, the
server and the Python API; filters in both syntaxes; filtered search against brute force;
query by example, arithmetic, thresholds and pages; user metadata and old catalogs.

The index holds the generated clips of tests/test_pipeline cut into 0.4 s segments, with user
metadata from a JSON-lines file and a sidecar.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import pig
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, VideoIndex
from pig.engine.index import vectors as vectors_mod
from pig.engine.index.catalog import CATALOG_NAME, FACT_COLUMNS
from pig.engine.query.filters import Condition, parse_json, parse_where
from pig.engine.query.search import answer_json
from pig.errors import PigError
from tests.serving import Server
from tests.test_cli import run, user_error
from tests.test_pipeline import fake_bundle, make_clips
from tests.test_serve import CHROMIUM, CHROMIUM_ARGS, SCORE_TOL, build_index

__all__ = ["fake_bundle"]

CAMERAS = ["lobby", "door", "lobby", "yard", "door", "lobby", "yard", "door", "lobby"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_clips(tmp_path_factory.mktemp("query_clips") / "cams")


@pytest.fixture(scope="module")
def index(fake_bundle: Bundle, clips: list[Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    """The clips indexed with metadata: camera per clip (JSON lines, clip 0 by sidecar)."""
    root = tmp_path_factory.mktemp("query")
    meta = root / "meta.jsonl"
    meta.write_text("".join(json.dumps({"path": str(p), "camera": c, "n": i}) + "\n"
                            for i, (p, c) in enumerate(zip(clips, CAMERAS, strict=True)) if i))
    Path(f"{clips[0]}.json").write_text(json.dumps({"camera": CAMERAS[0], "n": 0}))
    idx = build_index(fake_bundle, root / "idx", clips[0].parent)
    pig.index_videos([clips[0].parent], bundle=fake_bundle, index=idx, metadata=meta)
    return idx


@pytest.fixture(scope="module")
def keys(index: Path, clips: list[Path]) -> list[int]:
    """The catalog id of each clip."""
    with VideoIndex.open(index, view=True) as opened:
        return [opened.lookup(c).key for c in clips]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def server(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("query_log") / "server.log"
    with Server("--index", index, "--max-wait-ms", 50, log=log) as s:
        yield s
    assert "Traceback" not in s.output()


@pytest.fixture(scope="module")
def api(index: Path) -> Iterator[pig.Index]:
    with pig.open_index(index) as opened:
        yield opened


# --- one grammar, two syntaxes -------------------------------------------------------------
def test_where_and_json_parse_to_the_same_filter() -> None:
    pairs = [
        (["duration_s >= 60", "path ~ /cams/lobby/*"],
         {"duration_s": {"gte": 60}, "path": {"glob": "/cams/lobby/*"}}),
        (["meta.camera in [lobby, door]", "width > 40"],
         {"meta.camera": {"in": ["lobby", "door"]}, "width": {"gt": 40}}),
        (["codec = h264", "extension != 'mkv'", "fps < 30.5", "end_s <= 2"],
         {"codec": "h264", "extension": {"ne": "mkv"}, "fps": {"lt": 30.5}, "end_s": {"lte": 2}}),
        (["mtime >= 2026-05-01"], {"mtime": {"gte": "2026-05-01"}}),
    ]
    for where, obj in pairs:
        assert parse_where(where) == parse_json(obj)
        assert parse_json(parse_where(where).to_json()) == parse_where(where)
    assert parse_where(["meta.n = 3"]).conditions == (Condition("meta.n", "=", 3),)
    assert parse_where(["meta.n = '3'"]).conditions == (Condition("meta.n", "=", "3"),)
    assert parse_where(["name = 3.mp4"]).conditions == (Condition("name", "=", "3.mp4"),)


@pytest.mark.parametrize(("where", "obj", "message"), [
    ("colour = red", {"colour": "red"}, "unknown field 'colour'"),
    ("size >= big", {"size": {"gte": "big"}}, "size is a number"),
    ("size like 3", {"size": {"like": 3}}, None),
    ("meta.x in 3", {"meta.x": {"in": 3}}, "list"),
    ("mtime > yesterday", {"mtime": {"gt": "yesterday"}}, "ISO date"),
])
def test_bad_filters_are_one_line_naming_the_problem(where: str, obj: dict[str, Any],
                                                     message: str | None) -> None:
    with pytest.raises(PigError) as cli:
        parse_where([where])
    with pytest.raises(PigError) as http:
        parse_json(obj)
    assert "\n" not in str(cli.value) and "\n" not in str(http.value)
    if message is None:  # an unknown operator: the CLI cannot split it, JSON names it
        assert "FIELD OP VALUE" in str(cli.value) and "unknown operator 'like'" in str(http.value)
    else:
        assert message in str(cli.value) and message in str(http.value)


# --- CLI, HTTP and Python answer alike -----------------------------------------------------
# (CLI args, HTTP body, Python keyword arguments): one request each
def cases(keys: list[int]) -> list[tuple[list[object], dict[str, Any], dict[str, Any]]]:
    a, b = keys[3], keys[8]  # clip 8 has 3 segments
    return [
        (["-q", "a red circle", "-k", 3], {"query": "a red circle", "k": 3},
         {"query": "a red circle", "k": 3}),
        (["-q", "hello", "--where", "meta.camera = lobby", "--where", "width >= 56"],
         {"query": "hello", "filter": {"meta.camera": "lobby", "width": {"gte": 56}}},
         {"query": "hello", "where": ["meta.camera = lobby", "width >= 56"]}),
        (["-q", "hello", "--where", "path ~ */clip0[0-4].mp4", "--group-by", "segment", "-k", 50],
         {"query": "hello", "filter": {"path": {"glob": "*/clip0[0-4].mp4"}}, "group_by": "segment",
          "k": 50},
         {"query": "hello", "where": {"path": {"glob": "*/clip0[0-4].mp4"}}, "group_by": "segment",
          "k": 50}),
        (["-q", "a big blue square", "--not", "slides right", "--min-score", "-0.1"],
         {"query": "a big blue square", "not": ["slides right"], "min_score": -0.1},
         {"query": "a big blue square", "not_": "slides right", "min_score": -0.1}),
        (["--like", f"@{a}", "-k", 4], {"like": {"id": a}, "k": 4}, {"like": f"@{a}", "k": 4}),
        (["--like", f"@{b}:1", "--group-by", "segment", "--offset", 2, "-k", 3],
         {"like": {"id": b, "segment": 1}, "group_by": "segment", "offset": 2, "k": 3},
         {"like": f"@{b}:1", "group_by": "segment", "offset": 2, "k": 3}),
        (["-q", "red", "--like", f"@{a}", "--combine", "--weight", 0.5, "--weight", 2,
          "--where", "duration_s > 0.5", "--approximate"],
         {"terms": [{"text": "red", "weight": 0.5}, {"like": {"id": a}, "weight": 2}],
          "filter": {"duration_s": {"gt": 0.5}}, "exact": False},
         {"query": "red", "like": f"@{a}", "weights": [0.5, 2], "where": "duration_s > 0.5",
          "exact": False}),
        (["-q", "hello", "--moments", 2, "--merge-adjacent", "-k", 4],
         {"query": "hello", "moments": 2, "merge_adjacent": True, "k": 4},
         {"query": "hello", "moments": 2, "merge_adjacent": True, "k": 4}),
    ]


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Same fields, order, values; scores (of hits and moments) to ``SCORE_TOL``."""
    def scores(h: dict[str, Any]) -> list[float]:
        return [h["score"], *(m["score"] for m in h.get("moments", []))]

    def unscored(h: dict[str, Any]) -> dict[str, Any]:
        return {**h, "score": None, "moments": [{**m, "score": None}
                                                for m in h.get("moments", [])]}

    assert [list(r) for r in a] == [list(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert {**x, "results": None} == {**y, "results": None}
        assert [list(h) for h in x["results"]] == [list(h) for h in y["results"]]
        assert [unscored(h) for h in x["results"]] == [unscored(h) for h in y["results"]]
        np.testing.assert_allclose([s for h in x["results"] for s in scores(h)],
                                   [s for h in y["results"] for s in scores(h)], rtol=0,
                                   atol=SCORE_TOL)


def test_cli_http_and_python_answer_alike(server: Server, index: Path, api: pig.Index,
                                          keys: list[int],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for args, body, kwargs in cases(keys):
        code, out, err = run(capsys, "search", "--index", index, "--json", *args)
        assert code == 0, err
        cli = [json.loads(line) for line in out.splitlines()]
        r = httpx.post(f"{server.url}/v1/search", json=body, timeout=30)
        assert r.status_code == 200, r.text
        python = [answer_json(api.request(**kwargs), api.search(**kwargs))]
        _same(r.json()["results"], cli)
        _same(python, cli)
        assert cli[0]["results"], args


def test_filters_admit_exactly_the_matching_files(api: pig.Index, clips: list[Path]) -> None:
    lobby = {str(c) for c, cam in zip(clips, CAMERAS, strict=True) if cam == "lobby"}
    hits = api.search("hello", k=50, where="meta.camera = lobby").hits
    assert {h.path for h in hits} == lobby
    hits = api.search("hello", k=50, where={"meta.camera": {"in": ["door", "yard"]},
                                            "meta.n": {"gte": 4}}, group_by="segment").hits
    assert {h.path for h in hits} == {str(c) for i, (c, cam) in
                                      enumerate(zip(clips, CAMERAS, strict=True))
                                      if cam != "lobby" and i >= 4}
    assert api.search("hello", where="start_s >= 0.4", group_by="segment").hits
    assert all(h.start_s >= 0.4 for h in
               api.search("hello", k=100, where="start_s >= 0.4", group_by="segment").hits)
    facts = api.engine.indexes[0].facts([hits[0].key])[hits[0].key]
    assert facts["codec"] == "h264" and facts["width"] >= 48 and facts["duration_s"] > 0
    assert not api.search("hello", where="codec = vp9").hits


def test_pages_neither_skip_nor_repeat(api: pig.Index) -> None:
    for group_by in ("video", "segment"):
        for exact in (True, False):
            whole = api.search("a red circle", k=200, group_by=group_by, exact=exact)
            assert whole.next is None
            seen, offset = [], 0
            while offset is not None:
                page = api.search("a red circle", k=3, offset=offset, group_by=group_by,
                                  exact=exact)
                seen += page.hits
                offset = page.next
            assert [(h.key, h.segment) for h in seen] == \
                [(h.key, h.segment) for h in whole.hits]
    scores = [h.score for h in api.search("a red circle", k=200).hits]
    cut = scores[len(scores) // 2]
    top = api.search("a red circle", k=200, min_score=cut).hits
    assert [h.score for h in top] == [s for s in scores if s >= cut]


def test_query_by_example_and_arithmetic(api: pig.Index, keys: list[int], clips: list[Path],
                                         tmp_path: Path) -> None:
    hits = api.search(like=f"@{keys[3]}:0", group_by="segment", exact=True).hits
    own = next(h for h in hits if (h.key, h.segment) == (keys[3], 0))  # f16: ~1 +- 1e-3
    assert own.score == pytest.approx(1.0, abs=2e-3) and own.score >= hits[0].score - 2e-3
    by_path = api.search(like=clips[3], k=5)  # an indexed file: its stored vectors
    assert [h.key for h in by_path.hits] == \
        [h.key for h in api.search(like=f"@{keys[3]}", k=5).hits]
    copy = tmp_path / "copy.mp4"  # not indexed: encoded like an indexed file
    shutil.copyfile(clips[3], copy)
    encoded = api.search(like=copy, k=5)
    assert [h.key for h in encoded.hits] == [h.key for h in by_path.hits]
    np.testing.assert_allclose([h.score for h in encoded.hits],
                               [h.score for h in by_path.hits], atol=2e-3)
    import av  # an image is a still video

    png = tmp_path / "still.png"
    frame = av.VideoFrame.from_ndarray(np.full((40, 64, 3), (200, 30, 30), np.uint8), "rgb24")
    with av.open(str(png), "w") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 40, "rgb24"
        out.mux([*stream.encode(frame), *stream.encode(None)])
    still = api.encode_video(png)
    assert still.shape == (api.engine.bundle.embedding_dim,)
    assert abs(float(np.linalg.norm(still)) - 1) < 1e-5
    assert len(api.search(like=png, k=3).hits) == 3
    text = api.encode_text(["a red circle", "slides right"])
    want = text[0] - text[1]
    want /= np.linalg.norm(want)
    stored = api.engine.indexes[0]
    hit = api.search("a red circle", not_="slides right", group_by="segment", exact=True).hits[0]
    assert hit.score == pytest.approx(float(stored.vectors_of([
        stored.segment_key(hit.key, hit.segment)])[0] @ want), abs=2**-10)  # f16 query
    with pytest.raises(PigError, match="cancel out"):
        api.search("hello", not_="hello")
    with pytest.raises(PigError, match="no such indexed video"):
        api.search(like="@999")


def test_http_refuses_unindexed_files_and_bad_filters(server: Server, clips: list[Path],
                                                      keys: list[int], tmp_path: Path) -> None:
    ok = httpx.post(f"{server.url}/v1/search", json={"like": {"path": str(clips[1])}})
    assert ok.status_code == 200 and ok.json()["results"][0]["results"][0]["id"] == keys[1]
    stray = tmp_path / "stray.mp4"
    shutil.copyfile(clips[1], stray)
    for body, message in [({"like": {"path": str(stray)}}, "not in the index"),
                          ({"query": "a", "filter": {"colour": "red"}}, "unknown field"),
                          ({"query": "a", "filter": {"size": {"near": 3}}}, "unknown operator"),
                          ({"like": {"id": 1, "index": 3}}, "no index 3")]:
        r = httpx.post(f"{server.url}/v1/search", json=body, timeout=30)
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


def test_cli_refusals_are_one_line(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in [(["-q", "a", "--where", "colour = red"], "unknown field 'colour'"),
                          (["-q", "a", "--weight", 2], "only with --combine"),
                          (["--like", "@x"], "expected @ID"),
                          (["--like", "/no/such.mp4"], "file not found")]:
        code, _, err = run(capsys, "search", "--index", index, *args)
        assert code == 2 and message in user_error(err), err


def test_moments_are_each_files_best_spans(api: pig.Index, keys: list[int]) -> None:
    stored = api.engine.indexes[0]
    q = api.encode_text(["slides right"])[0]
    for hit in api.search("slides right", k=9, moments=3).hits:
        segments = stored.segments_of(hit.path)
        scores = stored.vectors_of([s.key for s in segments]) @ q
        best = np.argsort(-scores, kind="stable")[:3]
        assert [m.segments for m in hit.moments] == [(segments[b].ordinal,) for b in best]
        np.testing.assert_allclose([m.score for m in hit.moments], scores[best], atol=1e-6)
        assert hit.moments[0].segments == (hit.segment,) or \
            abs(hit.moments[0].score - hit.score) < 2**-10  # near-tie under f16 rounding
    long = next(h for h in api.search("slides right", k=9, moments=3,
                                      merge_adjacent=True).hits if h.key == keys[8])
    assert [(m.segments, m.start_s) for m in long.moments] == [((0, 1, 2), 0.0)]
    assert long.moments[0].end_s == stored.segments_of(long.path)[-1].end_s
    with pytest.raises(PigError, match="need group_by video"):
        api.search("a", moments=2, group_by="segment")


# --- thumbnails ----------------------------------------------------------------------------
def test_thumbnails_kept_served_and_compacted(server: Server, index: Path, keys: list[int],
                                              tmp_path: Path) -> None:
    import av

    with VideoIndex.open(index, view=True) as opened:
        segments = opened.segments_of(opened.record(keys[8]).path)  # type: ignore[union-attr]
    assert len(segments) == 3
    for seg in segments:
        r = httpx.get(f"{server.url}/v1/videos/{keys[8]}/thumbnail",
                      params={"segment": seg.ordinal}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        jpeg = tmp_path / f"t{seg.ordinal}.jpg"
        jpeg.write_bytes(r.content)
        with av.open(str(jpeg)) as c:
            frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (72, 40) and len(r.content) < 8000  # 72x40 clip
    for params, status in [({"segment": 3}, 404), ({"segment": -1}, 422),
                           ({"segment": 0, "index": 1}, 404)]:
        r = httpx.get(f"{server.url}/v1/videos/{keys[8]}/thumbnail", params=params, timeout=30)
        assert r.status_code == status, r.text
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    with VideoIndex.open(copy, writable=True) as writer:
        writer.compact()
    with VideoIndex.open(copy, view=True) as compacted, VideoIndex.open(index, view=True) as o:
        assert compacted.thumbnail(keys[8], 2) == o.thumbnail(keys[8], 2) is not None


# --- the page --------------------------------------------------------------------------------
def _shot(page: Any, name: str, tmp_path: Path) -> None:
    """A screenshot kept as a test artefact: under ``PIG_TEST_ARTIFACTS`` when set (CI
    uploads that folder), else in the test's temporary folder."""
    folder = Path(os.environ.get("PIG_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"search-page-{name}.png"))


def test_search_page_in_a_real_browser(server: Server, api: pig.Index, clips: list[Path],
                                       keys: list[int], tmp_path: Path) -> None:
    """Headless Debian chromium: the empty page shows what is indexed; a search with the
    folder and duration filters and the segment toggle lands in the URL and shows the API's
    hits with their thumbnails; "more like this" searches by that segment; Back returns."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    folder = str(clips[0].parent)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(server.url + "/")
            page.wait_for_selector("#library:not([hidden])")
            text = page.locator("#library").inner_text()
            assert "9 files" in text and "mp4 (9)" in text and "h264 (9)" in text, text
            _shot(page, "empty", tmp_path)

            page.fill("#query", "a red circle")
            page.select_option("#by", "segment")
            page.fill("#folder", folder)
            page.fill("#dmin", "0.5")
            page.press("#query", "Enter")
            page.wait_for_selector("#results li")
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))
            assert query == {"q": "a red circle", "by": "segment", "folder": folder,
                             "dmin": "0.5"}
            want = api.search("a red circle", group_by="segment", where=[
                f"path ~ {folder}/*", "duration_s >= 0.5"]).hits
            items = page.locator("#results li")

            def shown() -> list[tuple[int, int]]:
                return [(int(a), int(b)) for a, b in items.evaluate_all(
                    "els => els.map(e => [e.dataset.videoId, e.dataset.segment])")]

            assert shown() == [(h.key, h.segment) for h in want]
            page.wait_for_function("[...document.querySelectorAll('#results img')].every("
                                   "i => i.complete && i.naturalWidth > 0)")
            _shot(page, "results", tmp_path)

            items.nth(1).locator(".more").click()
            page.wait_for_url("**like=*")
            like = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))["like"]
            assert like == f"{want[1].key}:{want[1].segment}@0"
            similar = api.search(like=f"@{want[1].key}:{want[1].segment}", group_by="segment",
                                 where=[f"path ~ {folder}/*", "duration_s >= 0.5"]).hits
            page.wait_for_function(f"document.querySelector('#status').textContent"
                                   f".includes('like @{want[1].key}:{want[1].segment}')")
            assert shown() == [(h.key, h.segment) for h in similar]

            page.go_back()
            page.wait_for_function("document.querySelector('#status').textContent"
                                   ".includes('for a red circle')")
            assert page.input_value("#query") == "a red circle" and shown() == \
                [(h.key, h.segment) for h in want]
        finally:
            browser.close()


def test_search_page_asks_for_the_key_up_front(index: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    with Server("--index", index, "--api-key-file", key, log=tmp_path / "log") as s, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(s.url + "/")
            page.wait_for_selector("#key:not([hidden])")  # before any search
            page.fill("#api-key", "s3cret")
            page.press("#api-key", "Enter")
            page.wait_for_selector("#library:not([hidden])")
            assert "9 files" in page.locator("#library").inner_text()
            page.goto(s.url + "/?q=hello&k=3")  # a shared link, the key remembered
            page.wait_for_selector("#results li")
            assert page.locator("#results li").count() == 3
            page.wait_for_function("[...document.querySelectorAll('#results img')].every("
                                   "i => i.complete && i.naturalWidth > 0)")  # the cookie
            _shot(page, "with-key", tmp_path)
        finally:
            browser.close()


# --- metadata ------------------------------------------------------------------------------
def test_tag_changes_metadata_and_filters_follow(fake_bundle: Bundle, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    clips = make_clips(tmp_path / "v", n=3)
    table = tmp_path / "meta.csv"
    table.write_text("path,camera\nv/clip00.mp4,lobby\nv/clip01.mp4,door\n")
    idx = tmp_path / "idx"
    code, _, err = run(capsys, "index", tmp_path / "v", "--bundle", fake_bundle.dir,
                       "--index", idx, "--metadata", table)
    assert code == 0, err

    def cameras() -> dict[str, Any]:
        with VideoIndex.open(idx, view=True) as opened:
            recs = {r.key: Path(r.path).name for r in opened.records()}
            return {recs[k]: f["meta"].get("camera") for k, f in opened.facts(list(recs)).items()}

    assert cameras() == {"clip00.mp4": "lobby", "clip01.mp4": "door", "clip02.mp4": None}
    code, out, err = run(capsys, "tag", "--index", idx, clips[2], clips[0], "--set",
                         "camera=yard", "--set", "floor=2")
    assert code == 0 and "tagged 2 videos" in out, err
    assert cameras() == {"clip00.mp4": "yard", "clip01.mp4": "door", "clip02.mp4": "yard"}
    code, out, err = run(capsys, "search", "--index", idx, "-q", "a", "--json",
                         "--where", "meta.floor = 2", "--where", "meta.camera = yard")
    assert {Path(h["path"]).name for h in json.loads(out)["results"]} == \
        {"clip00.mp4", "clip02.mp4"}
    code, _, err = run(capsys, "tag", "--index", idx, clips[0], "--unset", "camera")
    assert code == 0 and cameras()["clip00.mp4"] is None
    code, _, err = run(capsys, "tag", "--index", idx, tmp_path / "nope.mp4", "--set", "a=1")
    assert code == 1 and "not in the index" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "v/clip00.mp4", "camera": ["a"]}\n')
    code, _, err = run(capsys, "tag", "--index", idx, "--metadata", bad)
    assert code == 2 and "bad.jsonl:1: metadata key 'camera'" in user_error(err)


def test_thumbnails_and_metadata_follow_a_move(fake_bundle: Bundle, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    clips = make_clips(tmp_path / "lib" / "a", n=2)
    Path(f"{clips[0]}.json").write_text('{"camera": "lobby"}')
    idx = tmp_path / "idx"
    code, _, err = run(capsys, "index", tmp_path / "lib", "--bundle", fake_bundle.dir,
                       "--index", idx)
    assert code == 0, err
    with VideoIndex.open(idx, view=True) as before:
        key = before.lookup(clips[0]).key  # type: ignore[union-attr]
        thumb, facts = before.thumbnail(key, 0), before.facts([key])[key]
    assert thumb and facts["meta"] == {"camera": "lobby"}
    moved = tmp_path / "lib" / "b" / "moved.mp4"
    moved.parent.mkdir()
    clips[0].rename(moved)
    code, _, err = run(capsys, "sync", tmp_path / "lib", "--bundle", fake_bundle.dir,
                       "--index", idx)
    assert code == 0, err
    with VideoIndex.open(idx, view=True) as after:
        rec = after.lookup(moved)
        assert rec is not None and rec.key == key
        assert after.thumbnail(key, 0) == thumb and after.facts([key])[key] == facts


def test_old_catalog_gains_the_columns_on_first_write(fake_bundle: Bundle, index: Path,
                                                      tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(index, old)
    db = sqlite3.connect(old / CATALOG_NAME)
    for column in FACT_COLUMNS:
        db.execute(f"ALTER TABLE files DROP COLUMN {column}")
    db.execute("DELETE FROM meta WHERE name = 'facts_filled'")
    db.commit()
    db.close()
    with VideoIndex.open(old, view=True) as reader:  # a reader: facts read as NULL
        key = next(reader.records()).key
        assert reader.facts([key])[key]["codec"] is None
        assert len(reader.matching(*parse_where(["codec = h264"]).sql()).keys) == 0
        assert len(reader.matching(*parse_where(["size > 0"]).sql()).keys) == reader.counts()[
            "vectors"]
    with VideoIndex.open(old, writable=True):  # the first writer upgrades it
        pass
    with VideoIndex.open(old, view=True) as upgraded, VideoIndex.open(index, view=True) as new:
        keys = [r.key for r in new.records()]
        got, want = upgraded.facts(keys), new.facts(keys)
        for k in keys:
            assert {**got[k], "meta": None} == {**want[k], "meta": None}
        assert upgraded.generation == new.generation + 1
    with VideoIndex.open(old, writable=True) as again:  # idempotent: nothing left to do
        assert not again.dirty


# --- filtered search against brute force ---------------------------------------------------
@pytest.mark.parametrize(("path", "dtype"), [("scan", "f32"), ("scan", "f16"), ("scan", "i8"),
                                             ("hnsw", "f16")])
def test_filtered_search_equals_brute_force(tmp_path: Path, path: str, dtype: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact scan finds the top 10 of the admitted vectors as stored (f16/i8: the query
    is rounded too, which may swap near ties); HNSW with over-fetch >= 0.98 of it."""
    from bench.bench_search import structured_vectors

    n, dim = 4000, 64
    x = structured_vectors(n, dim, seed=1)
    q = structured_vectors(20, dim, seed=2)
    with VideoIndex.create(tmp_path / "idx", fingerprint="t", dim=dim, bundle_info={},
                           dtype=dtype) as idx:
        idx.add([Entry(f"/v/{i % 7}/f{i}.mp4", i, 0, "", 1) for i in range(n)], x)
    monkeypatch.setattr(vectors_mod, "SCAN_RATIO", n if path == "scan" else 0)
    with VideoIndex.open(idx.path, view=True) as opened:
        for where in (["size < 2000"], ["folder = /v/3"], ["size >= 3990"], ["size < 0"]):
            allowed = opened.matching(*parse_where(where).sql())
            stored = opened.vectors_of(allowed.keys) if len(allowed.keys) else x[:0]
            truth = np.argsort(-(q @ stored.T), axis=1, kind="stable")[:, :10]
            found = opened.search(q, 10, exact=False, group_by="segment", allowed=allowed)
            hits = [{h.key for h in row} for row in found]
            want = [set((allowed.keys[t]).tolist()) for t in truth]
            recall = np.mean([len(h & w) / len(w) if w else float(not h)
                              for h, w in zip(hits, want, strict=True)])
            assert all(len(h) == min(10, len(allowed.keys)) for h in hits), where
            # i8: the query is quantised too, as in usearch's own i8 search (~1e-3 score error)
            floor = 0.98 if path == "hnsw" else {"f32": 1.0, "f16": 0.995, "i8": 0.95}[dtype]
            assert recall >= floor, (where, recall)

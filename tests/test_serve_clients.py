"""``pig-engine serve`` with the clients people already use, over real HTTP(S) on loopback:
the official ``openai`` SDK, a browser on /docs and /redoc with no other host reachable,
curl's form content type, and the server options (access log, stop line, TLS, root path,
CORS, model name).

Reference vectors come from the backend (``encode_text``) on the fake bundle of
tests/test_pipeline, as in tests/test_serve.py.
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pig.engine.backends.onnxruntime import OrtBackend
from pig.engine.bundle import Bundle
from pig.engine.tokenizer import ClipTokenizer
from tests.serving import Server, wait_until
from tests.test_cli import run, user_error
from tests.test_serve import CHROMIUM, CHROMIUM_ARGS, clips, fake_bundle, index

__all__ = ["clips", "fake_bundle", "index"]

KEY = "s3cret-key"
ORIGIN = "https://app.example.com"
NAME = "pig-test"
TEXTS = ["a red circle moves to the left", "hello"]


def reference(bundle: Bundle, texts: list[str]) -> np.ndarray:
    ids = ClipTokenizer(bundle.tokenizer_spec).encode(texts)
    with OrtBackend(bundle, branches=("text",)) as enc:
        return np.concatenate([enc.encode_text(ids[i:i + 1]) for i in range(len(texts))])


@pytest.fixture(scope="module")
def keyed(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a key, a model name, an access log and one CORS origin."""
    d = tmp_path_factory.mktemp("clients")
    (d / "key").write_text(KEY + "\n")
    with Server("--index", index, "--api-key-file", d / "key", "--model-name", NAME,
                "--access-log", "--cors-origin", ORIGIN, log=d / "server.log") as s:
        yield s
    assert "Traceback" not in s.output()


@pytest.fixture(scope="module")
def plain(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default options."""
    with Server("--index", index, log=tmp_path_factory.mktemp("plain") / "server.log") as s:
        yield s
    assert "Traceback" not in s.output()


def test_openai_sdk_embeddings_and_models(keyed: Server, fake_bundle: Bundle) -> None:
    """The official SDK, unmodified: base64 (its default) and float vectors equal the
    backend's; the model by name or fingerprint; dimensions; errors as OpenAI's."""
    import openai

    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0, timeout=30)
    ref = reference(fake_bundle, TEXTS)
    dim = fake_bundle.embedding_dim
    packed = client.embeddings.create(input=TEXTS, model=NAME)  # the SDK asks for base64
    floats = client.embeddings.create(input=TEXTS, model=fake_bundle.fingerprint,
                                      encoding_format="float", dimensions=dim)
    for got in (packed, floats):
        assert got.model == NAME and [d.index for d in got.data] == [0, 1]
        np.testing.assert_allclose([d.embedding for d in got.data], ref, rtol=0, atol=1e-6)
    assert packed.usage.prompt_tokens == floats.usage.prompt_tokens > 0
    one = client.embeddings.create(input="hello", model=NAME)
    np.testing.assert_allclose(one.data[0].embedding, ref[1], rtol=0, atol=1e-6)

    models = client.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert models.data[0].fingerprint == fake_bundle.fingerprint  # type: ignore[attr-defined]
    assert client.models.retrieve(fake_bundle.fingerprint).id == NAME
    assert client.models.retrieve(NAME).owned_by == "pig-engine"

    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(input="a dog", model=NAME, dimensions=dim // 2)
    assert bad.value.param == "dimensions" and bad.value.code == "unsupported_dimensions"
    assert f"{dim} dimensions and are not trained to be truncated" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(input="a dog", model="text-embedding-3-small")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert NAME in missing.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        client.embeddings.create(input=["ok", " "], model=NAME)
    assert invalid.value.param == "input.1"
    stranger = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.models.list()
    assert denied.value.type == "authentication_error"


def test_default_model_name_is_the_bundle_folder(plain: Server, fake_bundle: Bundle) -> None:
    models = httpx.get(f"{plain.url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models] == [Path(fake_bundle.dir).resolve().name]
    assert models[0]["dimensions"] == fake_bundle.embedding_dim


@pytest.mark.parametrize("path", ["/v1/search", "/v1/embeddings"])
def test_non_json_content_type_is_415(keyed: Server, plain: Server, path: str) -> None:
    """curl -d sends a form's content type: 415 naming the fix, on the fast lane's routes
    (which hand it to FastAPI) and after the key check; JSON types are answered."""
    body = {"query": "a dog"} if path == "/v1/search" else {"input": "a dog"}
    auth = {"Authorization": f"Bearer {KEY}"}
    for server, headers in ((plain, {}), (keyed, auth)):
        for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
            r = httpx.post(server.url + path, content=httpx.Request(
                "POST", "/", json=body).content, headers={**headers, "content-type": ctype},
                timeout=30)
            assert r.status_code == 415, r.text
            assert "Content-Type: application/json" in r.text
        curl = httpx.post(server.url + path, data=body, headers=headers, timeout=30)
        assert curl.status_code == 415, curl.text
        for ctype in ("application/json", "application/json; charset=utf-8",
                      "application/vnd.pig+json"):
            r = httpx.post(server.url + path, json=body, timeout=30,
                           headers={**headers, "content-type": ctype})
            assert r.status_code == 200, (ctype, r.text)
    no_key = httpx.post(keyed.url + path, data=body, timeout=30)
    assert no_key.status_code == 401  # the key is checked first


def test_access_log_cors_and_stop_line(index: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    with Server("--index", index, "--api-key-file", key, "--access-log", "--cors-origin",
                ORIGIN, "--cors-origin", "http://localhost:3000", log=tmp_path / "log") as s:
        # a browser's preflight, then the request: answered by the fast lane, with the header
        pre = httpx.options(f"{s.url}/v1/search", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"}, timeout=30)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        r = httpx.post(f"{s.url}/v1/search", json={"query": "a dog"}, timeout=30,
                       headers={**auth, "Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        other = httpx.post(f"{s.url}/v1/search", json={"query": "a dog"}, timeout=30,
                           headers={**auth, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        httpx.get(f"{s.url}/v1/health/live", timeout=30)
        httpx.get(f"{s.url}/v1/models", timeout=30)  # 401: logged too
        lines = lambda: [ln for ln in s.output().splitlines()  # noqa: E731
                         if re.search(r'"(GET|POST|OPTIONS) /\S* HTTP/1.1" \d{3}', ln)]
        wait_until(lambda: len(lines()) >= 5, timeout=30)
        logged = lines()
        assert len(logged) == 5, logged
        assert re.search(r'127\.0\.0\.1:\d+ "POST /v1/search HTTP/1.1" 200', logged[1])
        assert re.search(r'"GET /v1/models HTTP/1.1" 401', logged[4])
        s.signal(signal.SIGTERM)
        assert s.wait(60) == 0
    out = s.output()
    assert re.search(rf"pig-engine serve: stopped \({re.escape(s.url)}, up \d+ s\)", out), out


def test_no_cors_headers_by_default(plain: Server) -> None:
    """Without --cors-origin another origin gets no CORS headers, and is refused outright
    (403: only the server's own names may send an Origin; docs/guarantees.md)."""
    r = httpx.post(f"{plain.url}/v1/search", json={"query": "a dog"},
                   headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(f"{plain.url}/v1/search", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "access-control-allow-origin" not in pre.headers


def self_signed(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_tls_and_root_path(index: Path, tmp_path: Path, fake_bundle: Bundle) -> None:
    """HTTPS with a self-signed certificate, behind a proxy that serves it under /pig (and
    strips the prefix, as uvicorn's root path expects): the API, the page's relative links
    and /docs carry the prefix."""
    cert, key = self_signed(tmp_path)
    with Server("--index", index, "--ssl-certfile", cert, "--ssl-keyfile", key,
                "--root-path", "/pig/", log=tmp_path / "log") as s:
        assert s.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=s.url, verify=trust, timeout=30) as client:
            r = client.post("/v1/search", json={"query": "a dog", "k": 2})
            assert r.status_code == 200 and len(r.json()["results"][0]["results"]) == 2
            e = client.post("/v1/embeddings", json={"input": TEXTS})
            np.testing.assert_allclose([d["embedding"] for d in e.json()["data"]],
                                       reference(fake_bundle, TEXTS), rtol=0, atol=1e-6)
            docs = client.get("/docs").text
            assert "'/pig/openapi.json'" in docs and '"/pig/docs-assets/swagger-ui-bundle.js"' \
                in docs
            assert client.get("/openapi.json").json()["servers"] == [{"url": "/pig"}]
            page = client.get("/").text
            assert 'src="static/app.js"' in page and client.get("/static/app.js").is_success
        with pytest.raises(httpx.ConnectError):  # the certificate is not trusted by default
            httpx.get(f"{s.url}/v1/health/live", timeout=30)
        plain_http = s.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"{plain_http}/v1/health/live", timeout=30).raise_for_status()


@pytest.mark.parametrize(("args", "message"), [
    (["--ssl-certfile", "{cert}"], "--ssl-certfile and --ssl-keyfile go together"),
    (["--ssl-certfile", "{missing}", "--ssl-keyfile", "{key}"], "cannot read it"),
    (["--ssl-certfile", "{key}", "--ssl-keyfile", "{key}"], "not a PEM certificate"),
    (["--root-path", "pig"], "starting with /"),
    (["--cors-origin", "https://app.example.com/path"], "no path"),
    (["--cors-origin", "app.example.com"], "scheme://host"),
    (["--model-name", " spaced "], "--model-name"),
])
def test_bad_serve_options_are_one_line(index: Path, tmp_path: Path, args: list[str],
                                        message: str, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    cert, key = self_signed(tmp_path)
    names = {"cert": cert, "key": key, "missing": tmp_path / "missing.pem"}
    code, out, err = run(capsys, "serve", "--index", index, "--port", 0,
                         *(a.format(**names) for a in args))
    assert code == 2 and message in user_error(err) and out == ""


def test_docs_and_redoc_render_offline_in_chromium(plain: Server) -> None:
    """Debian's chromium, headless, every request to another host refused: Swagger UI and
    ReDoc load their assets from the server and render every operation."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import Route, sync_playwright

    spec = httpx.get(f"{plain.url}/openapi.json", timeout=30).json()
    operations = [(m.upper(), p) for p, ms in spec["paths"].items() for m in ms]
    outside: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(plain.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{plain.url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            shown = page.locator(".opblock").evaluate_all(
                "els => els.map(e => [e.querySelector('.opblock-summary-method').innerText,"
                " e.querySelector('.opblock-summary-path').dataset.path])")
            assert sorted(map(tuple, shown)) == sorted(operations)
            page.goto(f"{plain.url}/redoc")
            page.wait_for_selector("[data-section-id^='operation/']", timeout=30_000)
            assert page.locator("[data-section-id^='operation/']").count() == len(operations)
        finally:
            browser.close()
    assert not outside, outside


"""The serve part of scripts/check_install.sh, run by the fresh venv's python (stdlib only).

Starts ``pig-engine serve --port 0`` on the index, then over HTTP: a search (the same hits as
``pig-engine search --json``), an embeddings request (float and base64: the same vector), the
model list, the search page, /docs and /redoc with every asset they load served locally, and
SIGTERM: exit 0 with the stop line.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import struct
import subprocess
import sys
import threading
import urllib.request
from typing import Any

READY = re.compile(r"ready at (https?://127\.0\.0\.1:\d+)")
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|(?:url|href)\s*:\s*['"]([^'"]+)['"]""")


def fetch(url: str, body: dict[str, Any] | None = None) -> tuple[int, str, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers.get("content-type", ""), r.read()


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"check-install: serve: {what}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--search", required=True, help="pig-engine search --json output")
    args = ap.parse_args()
    with open(args.search, encoding="utf-8") as f:
        cli = json.loads(f.readline())
    proc = subprocess.Popen(["pig-engine", "serve", "--index", args.index, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()
    url = ""

    def read() -> None:
        nonlocal url
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not url and (m := READY.search(line)):
                url = m.group(1)
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(120)
        check(bool(url), "no ready line:\n" + "".join(lines))
        _, _, raw = fetch(f"{url}/v1/search", {"query": cli["query"], "k": 3})
        served = json.loads(raw)["results"][0]["results"]
        check([h["path"] for h in served] == [h["path"] for h in cli["results"]],
              f"search hits differ from the CLI's: {served} vs {cli['results']}")
        _, _, raw = fetch(f"{url}/v1/models")
        models = json.loads(raw)["data"]
        check(len(models) == 1 and models[0]["object"] == "model", f"models: {models}")
        model = models[0]["id"]
        _, _, raw = fetch(f"{url}/v1/embeddings", {"input": "a dog", "model": model,
                                                   "encoding_format": "float"})
        vector = json.loads(raw)["data"][0]["embedding"]
        _, _, raw = fetch(f"{url}/v1/embeddings", {"input": "a dog", "model": model,
                                                   "encoding_format": "base64"})
        packed = base64.b64decode(json.loads(raw)["data"][0]["embedding"])
        decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
        check(len(decoded) == len(vector) and max(abs(a - b) for a, b in
                                                  zip(decoded, vector, strict=True)) < 1e-6,
              "base64 embedding differs from the float one")
        check(abs(sum(v * v for v in vector) - 1) < 1e-4, "embedding is not unit length")
        status, _, page = fetch(f"{url}/")
        check(status == 200 and b'id="player"' in page, "search page")
        for doc in ("/docs", "/redoc"):
            status, _, html = fetch(url + doc)
            check(status == 200, f"{doc}: {status}")
            assets = [a or b for a, b in ASSET.findall(html.decode())]
            remote = [a for a in assets if "://" in a]
            check(not remote, f"{doc} loads from elsewhere: {remote}")
            for asset in assets:
                if asset.endswith((".js", ".css")):
                    status, _, body = fetch(url + asset)
                    check(status == 200 and len(body) > 1000, f"{doc}: asset {asset}")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        reader.join(10)
    check(code == 0, f"exit {code} after SIGTERM:\n" + "".join(lines))
    check(any("pig-engine serve: stopped" in line for line in lines),
          "no stop line:\n" + "".join(lines))
    print(f"check-install: serve at {url}: search, embeddings (float, base64), models "
          f"({model}), page, /docs and /redoc offline, stop line: ok")


if __name__ == "__main__":
    main()

"""One-off provenance script: produce ``pig/data/clip_bpe_merges.txt.gz`` from OpenAI's file.

The source is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), as redistributed
unchanged inside the ``open_clip_torch`` wheel (``open_clip/bpe_simple_vocab_16e6.txt.gz``).
Get it without adding a dependency, e.g.::

    pip download --no-deps open_clip_torch==3.3.0 -d /tmp/oc
    unzip -o /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl \
        open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/oc
    python scripts/build_clip_vocab.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

CLIP uses only the first 49152 - 256 - 2 = 48894 merges of that file (the rest are never
reachable). The output keeps exactly those, in the HF ``merges.txt`` layout (a
``#version: 0.2`` header then one ``left right`` pair a line), gzip-compressed with a fixed
mtime so the output is byte-for-byte reproducible. The vocabulary is derived from the merges
at load time (``pig.engine.tokenizer.clip_vocab``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

SOURCE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
NUM_MERGES = 49152 - 256 - 2
OUT = Path(__file__).resolve().parents[1] / "pig" / "data" / "clip_bpe_merges.txt.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="bpe_simple_vocab_16e6.txt.gz")
    args = parser.parse_args()
    raw = args.source.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{args.source}: sha256 {digest} is not OpenAI's file {SOURCE_SHA256}")
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES or any(len(m.split(" ")) != 2 for m in merges):
        raise SystemExit(f"{args.source}: unexpected merges layout")
    text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    OUT.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, sha256 "
          f"{hashlib.sha256(OUT.read_bytes()).hexdigest()})")


if __name__ == "__main__":
    main()

"""Tokenizer throughput: ``ClipTokenizer`` vs ``transformers.CLIPTokenizerFast``.

Both tokenise the same deterministic captions (the parity-test corpus: short captions plus
unicode-heavy and very long texts) with the official call (max_length 50, padding to
max_length, truncation, numpy output). Queries/s at batch 1 and 256, plus cold load time.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pig.engine import tokenizer as tok_mod
from pig.engine.tokenizer import ClipTokenizer, clip_merges, clip_vocab
from tests.tokenizer_corpus import captions

N_TEXTS = 2560
MAX_LENGTH = 50


def _hf_tokenizer(cls: type, directory: Path) -> Callable[[list[str]], object]:
    """``cls`` (CLIPTokenizerFast) built offline from the shipped vocabulary, called as PIG does."""
    (directory / "vocab.json").write_text(json.dumps(clip_vocab()), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in clip_merges())
    (directory / "merges.txt").write_text(merges, encoding="utf-8")
    hf = cls(vocab_file=str(directory / "vocab.json"),
                           merges_file=str(directory / "merges.txt"))
    return lambda texts: hf(texts, max_length=MAX_LENGTH, padding="max_length",
                            truncation=True, return_tensors="np")["input_ids"]


def _qps(encode: Callable[[list[str]], object], texts: list[str], batch: int) -> float:
    """Best of 3 passes over ``texts`` in chunks of ``batch``."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            encode(texts[i : i + batch])
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def _timed(make: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    obj = make()
    return obj, time.perf_counter() - t0


def main() -> None:
    from transformers import CLIPTokenizerFast  # imported before timing its load

    texts = captions(N_TEXTS)
    tok_mod.clip_merges.cache_clear()
    tok_mod.clip_vocab.cache_clear()
    tok_mod._build.cache_clear()
    ours, ours_load = _timed(ClipTokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        hf, hf_load = _timed(lambda: _hf_tokenizer(CLIPTokenizerFast, Path(tmp)))
    print(f"{N_TEXTS} captions, max_length {MAX_LENGTH}; cold load: ours {ours_load * 1e3:.0f} ms, "
          f"CLIPTokenizerFast from vocab.json/merges.txt {hf_load * 1e3:.0f} ms")
    print(f"{'batch':>5}  {'ours q/s':>10}  {'HF q/s':>10}  {'ours/HF':>7}")
    for batch in (1, 256):
        texts_b = texts if batch > 1 else texts[: N_TEXTS // 4]
        q_ours = _qps(ours.encode, texts_b, batch)  # type: ignore[attr-defined]
        q_hf = _qps(hf, texts_b, batch)  # type: ignore[arg-type]
        print(f"{batch:>5}  {q_ours:>10.0f}  {q_hf:>10.0f}  {q_ours / q_hf:>6.2f}x")


if __name__ == "__main__":
    main()

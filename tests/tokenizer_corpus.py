"""Deterministic corpus of hard captions for tokenizer parity tests.

Mixes video-caption style sentences with the inputs where tokenizers usually diverge:
accents (NFC and NFD), emoji sequences (ZWJ, skin tones, flags), CJK and other scripts, HTML
entities, numbers in many scripts, punctuation runs, every whitespace kind, control and
zero-width characters, contractions, CLIP's special-token strings, mixed case, very long texts
(truncation) and the empty string. Every string is valid Unicode (no lone surrogates).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np

SUBJECTS = ["a man", "a woman", "two kids", "the crowd", "a cat", "people", "a chef", "someone",
            "a dog", "the band", "an old lady", "a robot", "players", "a girl", "the anchor"]
VERBS = ["is playing guitar", "are dancing", "is cooking pasta", "talks about cars",
         "is running", "sings a song", "is explaining math", "plays basketball",
         "is driving a car", "rides a horse", "is swimming", "reviews a phone", "is laughing"]
PLACES = ["on stage", "in the kitchen", "at a party", "on the beach", "in a studio",
          "outside", "on tv", "in the rain", "at night", "in a stadium", ""]

FRAGMENTS: dict[str, list[str]] = {
    "accents": ["café", "naïve", "crème brûlée", "São Paulo", "Zürich", "jalapeño", "façade",
                "Ångström", "Øresund", "Łódź", "İstanbul", "STRASSE straße", "ﬁnal ﬂow",
                "e\u0301cole", "A\u0308rger", "Ç", "ÆSIR", "Dvořák", "Ἀθῆναι", "ǅemal"],
    "emoji": ["🐱", "🎂", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "👍🏽", "❤️", "🇫🇷🇯🇵", "😂😂😂",
              "🤖", "☕", "✈︎", "1️⃣", "🫠"],
    "cjk": ["一只猫在沙发上睡觉", "東京の夜景", "고양이가 춤을 춘다", "ｆｕｌｌ　ｗｉｄｔｈ",
            "カタカナ", "中文，标点。", "ﾊﾝｶｸ", "㍿", "𠮷野家"],
    "scripts": ["Привет мир", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ",
                "Γειά σου Κόσμε", "ქართული", "Ελληνικά ΣΊΣΥΦΟΣ", "Türkçe ığüşöç", "tiếng Việt"],
    "html": ["&amp;", "&quot;hi&quot;", "&#39;", "&lt;b&gt;bold&lt;/b&gt;", "<br/>", "&nbsp;",
             "&#x1F600;", "Tom &amp; Jerry", "<i>x</i>", "&copy; 2024"],
    "numbers": ["1,000,000", "3.14159", "2nd", "10:30pm", "½", "x²", "٣٤٥", "１２３", "$5.99",
                "-42", "1e-5", "#1", "007", "Ⅻ", "१२३", "50%", "4k", "1080p", "9/11"],
    "punct": ["!", "?!", "...", "…", "—", "–", "“quoted”", "«guillemets»", "(parens)", "[x]",
              "{y}", "@user", "#hashtag", "http://example.com/a?b=c&d=e", "C++", "snake_case",
              "a/b", "\\path", "`code`", "~", "^_^", ":-)", "!!!???", "--", "***", "¿qué?"],
    "apostrophes": ["it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S",
                    "dogs'", "'quoted'", "rock 'n' roll", "it’s", "o'clock", "'s", "''",
                    "y'all'd've", "'LL", "can't't", "'re're", "don''t", "'", "'d'm"],
    "whitespace": [" ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u2028",
                   "\x0b", "\x0c", "\u0085", " \t \n "],
    "special": ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "<|endoftext",
                "<| endoftext |>", "x<|endoftext|>y", "<|startoftext|><|endoftext|>"],
    "control": ["\x00", "\x7f", "\x1b[31mred\x1b[0m", "\ufeff", "\ufffd", "\u200b", "\u200f",
                "a\u0301\u0301", "\u0301", "\U000e0041", "\uf8ff"],
}
KINDS = list(FRAGMENTS)
JOINERS = [" ", " ", " ", "", "  ", "\t", "\n", ", ", "-", " \u00a0"]
CODEPOINT_BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
                    (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
                    (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x2000, 0x206F)]

FIXED = ["", " ", "\t\n", "a photo of a cat", "A", "I", "'s", "it's", "<|endoftext|>",
         *(frag for frags in FRAGMENTS.values() for frag in frags)]


def _caption(rng: random.Random) -> str:
    words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}".strip()
    return _recase(words, rng)


def _recase(text: str, rng: random.Random) -> str:
    mode = rng.randrange(5)
    if mode == 0:
        return text.upper()
    if mode == 1:
        return text.title()
    if mode == 2:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    return text


def _mixture(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.35:
            parts.append(_caption(rng))
        else:
            parts.append(rng.choice(FRAGMENTS[rng.choice(KINDS)]))
    out = parts[0]
    for part in parts[1:]:
        out += rng.choice(JOINERS) + part
    return out


def _long(rng: random.Random) -> str:
    return " ".join(_mixture(rng) if rng.random() < 0.3 else _caption(rng)
                    for _ in range(rng.randint(8, 40)))


def _random_codepoints(rng: random.Random) -> str:
    lo, hi = rng.choice(CODEPOINT_BLOCKS)
    return "".join(chr(rng.randint(lo, hi)) if rng.random() < 0.85 else " "
                   for _ in range(rng.randint(1, 30)))


def captions(n: int = 2500, seed: int = 20250914) -> list[str]:
    """``n`` deterministic captions: the fixed edge cases first, then random ones."""
    rng = random.Random(seed)
    makers = [_caption] * 3 + [_mixture] * 5 + [_long] + [_random_codepoints]
    out = list(FIXED)
    while len(out) < n:
        out.append(rng.choice(makers)(rng))
    return out[:n]


# HF CLIPTokenizerFast's ids of ``captions()`` at these lengths, as uint16 (every id < 49408),
# so parity is checked in environments without transformers (the fresh install check).
REFERENCE_IDS = Path(__file__).parent / "reference" / "clip_tokenizer_ids.npz"
REFERENCE_LENGTHS = (50, 77, 8)


def corpus_digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()


def hf_ids(texts: list[str], max_length: int) -> np.ndarray:
    """HF CLIPTokenizerFast built offline from the shipped vocabulary, called as PIG's
    collator calls it (needs transformers)."""
    import tempfile

    from transformers import CLIPTokenizerFast

    from pig.engine.tokenizer import clip_merges, clip_vocab

    with tempfile.TemporaryDirectory() as d:
        vocab, merges = Path(d) / "vocab.json", Path(d) / "merges.txt"
        vocab.write_text(json.dumps(clip_vocab()), encoding="utf-8")
        merges.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in clip_merges()),
                          encoding="utf-8")
        hf = CLIPTokenizerFast(vocab_file=str(vocab), merges_file=str(merges))
        return hf.batch_encode_plus(texts, max_length=max_length, padding="max_length",
                                    truncation=True, return_tensors="np")["input_ids"]


def reference_ids() -> tuple[str, dict[int, np.ndarray]]:
    """(digest of the corpus they were made from, {max_length: ids int64 [n, max_length]})."""
    with np.load(REFERENCE_IDS) as z:
        return str(z["corpus_sha256"]), {n: z[f"ids_{n}"].astype(np.int64)
                                         for n in REFERENCE_LENGTHS}


if __name__ == "__main__":  # python -m tests.tokenizer_corpus: rewrite REFERENCE_IDS with HF
    texts = captions()
    np.savez_compressed(REFERENCE_IDS, corpus_sha256=corpus_digest(texts),
                        **{f"ids_{n}": hf_ids(texts, n).astype(np.uint16)
                           for n in REFERENCE_LENGTHS})
    print(f"wrote {REFERENCE_IDS}")

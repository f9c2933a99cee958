"""CLIP byte-level BPE tokenizer, id-for-id identical to HF ``CLIPTokenizerFast``.

Built on the ``tokenizers`` library from the merges shipped in ``pig/data/`` (no download, no
torch). ``encode`` reproduces ``CLIPTokenizerFast(texts, max_length=L, padding="max_length",
truncation=True)`` as the official PIG collator calls it: NFC, whitespace runs -> one space,
lower-case; CLIP's split regex then GPT-2 byte-level mapping; BPE with a ``</w>`` word suffix;
``[BOS] ... [EOS]``; truncation to ``L - 2`` body tokens so EOS is kept; right-padding with
``pad_id``. Like HF (and unlike OpenAI's original tokenizer) there is no ftfy/HTML-unescape
step, and the literal strings ``<|startoftext|>`` / ``<|endoftext|>`` in a text map to their ids.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

from pig.engine.recipe import TokenizerSpec
from pig.errors import BundleError, PigError

MERGES_FILE = "clip_bpe_merges.txt.gz"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# CLIP's pre-tokenisation regex (contractions, letter runs, single digits, symbol runs).
CLIP_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte -> printable-character table, in CLIP's vocabulary order.

    Printable Latin-1 bytes map to themselves and come first; the other 68 bytes map to
    ``chr(256 + k)`` in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]


@cache
def clip_merges() -> tuple[tuple[str, str], ...]:
    """The 48,894 CLIP merges, in rank order, from the packaged data file."""
    path = resources.files("pig") / "data" / MERGES_FILE
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise PigError(f"{path}: CLIP vocabulary unreadable ({err}); reinstall pig-engine") from err
    pairs = [tuple(line.split(" ")) for line in lines[1:]]
    if lines[:1] != ["#version: 0.2"] or any(len(p) != 2 for p in pairs):
        raise PigError(f"{path}: not a CLIP merges file; reinstall pig-engine")
    return tuple(pairs)  # type: ignore[arg-type]  # pairs of two, checked above


@cache
def clip_vocab() -> dict[str, int]:
    """Token -> id, built as OpenAI CLIP builds it (equal to HF ``vocab.json``).

    256 byte characters, the same with ``</w>``, one token per merge, then BOS and EOS.
    """
    alphabet = _byte_alphabet()
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in clip_merges()),
              BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}


@lru_cache(maxsize=8)
def _build(max_length: int, pad_id: int) -> Tokenizer:
    vocab = clip_vocab()
    bpe = models.BPE(vocab=vocab, merges=list(clip_merges()), continuing_subword_prefix="",
                     end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS_TOKEN)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    # sep and cls positionally: tokenizers 0.23 renamed the keyword ``cls`` to ``cls_token``.
    tok.post_processor = processors.RobertaProcessing(
        (EOS_TOKEN, vocab[EOS_TOKEN]), (BOS_TOKEN, vocab[BOS_TOKEN]),
        trim_offsets=False, add_prefix_space=False)
    tok.add_special_tokens([AddedToken(t, normalized=True, special=True)
                            for t in (BOS_TOKEN, EOS_TOKEN)])
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=tok.id_to_token(pad_id))
    return tok


def _check_spec(spec: TokenizerSpec) -> None:
    vocab = clip_vocab()
    problems = []
    if spec.kind != "clip_bpe":
        problems.append(f"kind {spec.kind!r} is not supported (only 'clip_bpe')")
    if spec.vocab_size != len(vocab):
        problems.append(f"vocab_size {spec.vocab_size} != CLIP's {len(vocab)}")
    if spec.bos_id != vocab[BOS_TOKEN] or spec.eos_id != vocab[EOS_TOKEN]:
        problems.append(f"bos/eos ids {spec.bos_id}/{spec.eos_id} != CLIP's "
                        f"{vocab[BOS_TOKEN]}/{vocab[EOS_TOKEN]}")
    if not 0 <= spec.pad_id < len(vocab):
        problems.append(f"pad_id {spec.pad_id} outside the vocabulary")
    if spec.max_length < 2:
        problems.append(f"max_length {spec.max_length} leaves no room for BOS and EOS")
    if problems:
        raise BundleError("tokenizer spec: " + "; ".join(problems))


def _check_unicode(texts: list[str]) -> None:
    """Name the first text that cannot be UTF-8 encoded (lone surrogates, e.g. from argv)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise PigError(f"text {i} is not valid Unicode ({err.reason} at {err.start}): "
                           f"{text!r:.80}") from None


class ClipTokenizer:
    """Batch CLIP tokenizer producing the text engine's ``input_ids`` (int64 ``[B, L]``).

    Construction is cheap after the first one: the underlying tokenizer is built once per
    (max_length, pad_id) and shared (it is only read from, so sharing across threads is safe).
    """

    def __init__(self, spec: TokenizerSpec | None = None) -> None:
        self.spec = spec or TokenizerSpec()
        _check_spec(self.spec)
        self._tok = _build(self.spec.max_length, self.spec.pad_id)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of a batch of texts, int64 ``[len(texts), max_length]``."""
        return self.tokenize(texts)[0]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text was cut to fit ``max_length`` (BOS + body + EOS)."""
        return self.tokenize(texts)[1]

    def tokenize(self, texts: Sequence[str], *, parallel: bool = True
                 ) -> tuple[np.ndarray, list[bool]]:
        """:meth:`encode` and :meth:`truncated` of ``texts`` from one tokenizer call.
        ``parallel=False`` encodes one text at a time on the calling thread, keeping the GIL:
        cheaper for the few texts of one request on a thread that should not wait to take the
        GIL back (an event loop); the batch call releases it and fans out to a thread pool."""
        encodings = self._encodings(texts, parallel)
        ids = np.array([enc.ids for enc in encodings], dtype=np.int64)
        return (ids.reshape(len(texts), self.spec.max_length),
                [bool(enc.overflowing) for enc in encodings])

    def _encodings(self, texts: Sequence[str], parallel: bool = True) -> list[Any]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; use encode_one() for one text")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
        _check_unicode(texts)  # tokenizers < 0.20 encodes a lone surrogate without a word
        if parallel:
            return self._tok.encode_batch(texts)
        return [self._tok.encode(text) for text in texts]

    def encode_one(self, text: str) -> np.ndarray:
        """Token ids of one text, int64 ``[max_length]``."""
        return self.encode([text])[0]

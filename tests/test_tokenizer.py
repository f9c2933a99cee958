"""ClipTokenizer: published CLIP ids, id-for-id parity with HF CLIPTokenizerFast (its ids of the
caption corpus, stored in tests/reference), errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pig.engine.recipe import TokenizerSpec
from pig.engine.tokenizer import ClipTokenizer, clip_merges, clip_vocab
from pig.errors import BundleError, PigError
from tests.tokenizer_corpus import (
    REFERENCE_LENGTHS,
    captions,
    corpus_digest,
    hf_ids,
    reference_ids,
)

# Ids published for OpenAI CLIP's tokenizer (README examples, other ports' fixtures, and the
# official-PIG reference input text 0); independent of this project's vocabulary derivation.
PUBLISHED_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "a photo of a dog": [320, 1125, 539, 320, 1929],
    "a diagram": [320, 22697],
    "A Photo of a TREE!": [320, 1125, 539, 320, 2677, 256],
    "it's a cat's toy, running   fast": [585, 568, 320, 2368, 568, 5988, 267, 2761, 1953],
    "2 dogs and 3 cats": [273, 3255, 537, 274, 3989],
    "person working at a computer": [2533, 1699, 536, 320, 11639, 652],
    "code editor with syntax highlighting": [3217, 7661, 593, 3758, 3879, 17344],
    "dog on a beach": [1929, 525, 320, 2117],
}
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return captions(2500)


@pytest.fixture(scope="module")
def reference() -> dict[int, np.ndarray]:
    """HF CLIPTokenizerFast's ids of the corpus (tests/reference/clip_tokenizer_ids.npz)."""
    digest, ids = reference_ids()
    assert digest == corpus_digest(captions(2500)), \
        "the corpus changed: python -m tests.tokenizer_corpus rewrites the reference ids"
    return ids


@pytest.mark.parametrize(("text", "body"), PUBLISHED_IDS.items())
def test_published_clip_ids(text: str, body: list[int]) -> None:
    expected = [BOS, *body, EOS] + [EOS] * (50 - len(body) - 2)
    got = ClipTokenizer().encode_one(text)
    assert got.dtype == np.int64 and got.shape == (50,)
    assert got.tolist() == expected


def test_vocabulary_layout() -> None:
    vocab = clip_vocab()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert vocab["<|startoftext|>"] == BOS and vocab["<|endoftext|>"] == EOS
    # Non-printable bytes use GPT-2's byte table and order (space "Ġ" 220, newline "Ċ" 198).
    assert (vocab["Ā"], vocab["Ċ"], vocab["Ġ"], vocab["Ġ</w>"]) == (188, 198, 220, 476)
    assert len(clip_merges()) == 49152 - 256 - 2


@pytest.mark.parametrize("max_length", REFERENCE_LENGTHS)
def test_parity_with_hf_clip_tokenizer_fast(
    corpus: list[str], reference: dict[int, np.ndarray], max_length: int
) -> None:
    """Id for id against HF's ids of the corpus, on the installed ``tokenizers`` (the install
    check runs this at both ends of the dependency range, where transformers is absent)."""
    spec = TokenizerSpec(max_length=max_length)
    ours = ClipTokenizer(spec).encode(corpus)
    ref = reference[max_length]
    assert ours.dtype == np.int64 and ours.shape == (len(corpus), max_length)
    mismatch = [i for i in range(len(corpus)) if not np.array_equal(ours[i], ref[i])]
    assert not mismatch, f"{len(mismatch)} differ, first {corpus[mismatch[0]]!r}"
    # The corpus must exercise what it claims: truncation, padding, non-ASCII bytes.
    truncated = (ours[:, -1] == EOS) & (ours[:, -2] != EOS)
    assert truncated.sum() >= (100 if max_length <= 50 else 20)
    assert (ours[:, 2] == EOS).sum() >= 2  # empty / whitespace-only texts
    assert ((ours >= 256) & (ours < 512)).any()  # single-byte tokens at word ends


def test_reference_ids_are_hf_output(corpus: list[str], reference: dict[int, np.ndarray]
                                     ) -> None:
    """The stored ids are what HF CLIPTokenizerFast (transformers) gives today."""
    pytest.importorskip("transformers")
    for max_length, ids in reference.items():
        np.testing.assert_array_equal(hf_ids(corpus, max_length), ids)


def test_pad_id_from_spec(corpus: list[str]) -> None:
    texts = [t for t in corpus if "<|endoftext|>" not in t.lower()]  # EOS only at the end
    default = ClipTokenizer().encode(texts)
    padded0 = ClipTokenizer(TokenizerSpec(pad_id=0)).encode(texts)
    after_eos = np.arange(50) > (default == EOS).argmax(axis=1, keepdims=True)
    np.testing.assert_array_equal(padded0, np.where(after_eos, 0, default))


def test_batch_rows_equal_single_calls(corpus: list[str]) -> None:
    tok = ClipTokenizer()
    texts = corpus[::25]
    batch = tok.encode(texts)
    np.testing.assert_array_equal(batch, np.stack([tok.encode_one(t) for t in texts]))
    assert tok.encode([]).shape == (0, 50)
    ids, cut = tok.tokenize(corpus)  # one batch call; then one text at a time, GIL kept
    one_by_one, one_cut = tok.tokenize(corpus, parallel=False)
    np.testing.assert_array_equal(one_by_one, ids)
    assert one_cut == cut == tok.truncated(corpus) and 0 < sum(cut) < len(cut)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"kind": "sentencepiece"}, "kind"), ({"vocab_size": 32000}, "vocab_size"),
     ({"bos_id": 0}, "bos/eos"), ({"pad_id": 49408}, "pad_id"), ({"max_length": 1}, "max_length")],
)
def test_unsupported_spec_is_bundle_error(change: dict[str, object], message: str) -> None:
    spec = dataclasses.replace(TokenizerSpec(), **change)
    with pytest.raises(BundleError, match=message):
        ClipTokenizer(spec)


def test_bad_inputs() -> None:
    tok = ClipTokenizer()
    with pytest.raises(TypeError, match="encode_one"):
        tok.encode("a photo")
    with pytest.raises(TypeError, match=r"texts\[1\].*NoneType"):
        tok.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(PigError, match=r"text 1.*Unicode"):
        tok.encode(["ok", "bad \udcff byte"])  # e.g. argv with invalid UTF-8


def test_runtime_import_is_torch_free() -> None:
    code = ("import sys; from pig.engine.tokenizer import ClipTokenizer; "
            "ClipTokenizer().encode(['x']); "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                   env={"PYTHONPATH": str(root), "PATH": ""})

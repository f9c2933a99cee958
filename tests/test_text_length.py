"""Dynamic text length: ``text.onnx`` takes ``[batch, seq]`` and the backends cut each batch
to its tokens; the vectors equal the full-length graph's (fp32, <= 1e-6) on queries of every
length, the caption corpus and the official reference inputs; old bundles work as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pig.demo.synth import captions
from pig.engine.backends.base import TEXT_BUCKET, encode_cut_text, text_lengths
from pig.engine.backends.onnxruntime import OrtBackend, cpu_session
from pig.engine.bundle import Bundle
from pig.engine.graphs import MIN_TEXT_LENGTH
from pig.engine.tokenizer import ClipTokenizer
from tests.fake_bundle import with_fixed_text_length

EXACT = 1e-6  # max |cut - full| of the unit text vectors at fp32
CORPUS = 256  # captions of the demo corpus checked


def _every_length(spec, seed: int = 0) -> np.ndarray:
    """One row per content length 0..L-2 (1..L tokens with BOS and EOS), random tokens."""
    rng = np.random.default_rng(seed)
    L = spec.max_length
    ids = np.full((L - 1, L), spec.pad_id, np.int64)
    ids[:, 0] = spec.bos_id
    for n in range(L - 1):
        ids[n, 1:1 + n] = rng.integers(1, spec.bos_id, n)
        ids[n, 1 + n] = spec.eos_id
    return ids


def test_cut_groups_rows_by_length_cuts_each_call_and_keeps_order() -> None:
    eos, L = 9, 20
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, L + 1, 100)  # columns up to the first EOS (L: none, all columns)
    ids = rng.integers(0, 9, (100, L))
    for row, n in zip(ids, lengths, strict=True):
        row[n - 1:] = eos if n < L else row[n - 1:]
    ids[lengths == L, -1] = eos
    calls: list[np.ndarray] = []

    def run(x: np.ndarray) -> np.ndarray:  # a causal stand-in: each row's tokens to its EOS
        calls.append(x)
        firsts = text_lengths(x, eos)
        assert (firsts <= x.shape[1]).all() and x.flags.c_contiguous
        return np.stack([[float(r[:f].sum()), f] for r, f in zip(x, firsts, strict=True)])

    got = encode_cut_text(run, ids, eos, MIN_TEXT_LENGTH, max_batch=16)
    want = np.stack([[float(r[:n].sum()), n] for r, n in zip(ids, lengths, strict=True)])
    np.testing.assert_array_equal(got, want)
    assert sum(len(c) for c in calls) == 100 and max(len(c) for c in calls) <= 16
    for c in calls:
        n = text_lengths(c, eos)
        assert c.shape[1] == max(n.max(), MIN_TEXT_LENGTH)  # cut to its longest row
        assert len(set((np.maximum(n, MIN_TEXT_LENGTH) - 1) // TEXT_BUCKET)) == 1  # one band
    one = encode_cut_text(run, ids[:1], eos, MIN_TEXT_LENGTH, max_batch=16)
    np.testing.assert_array_equal(one, want[:1])
    assert calls[-1].shape == (1, max(lengths[0], MIN_TEXT_LENGTH))
    assert encode_cut_text(lambda x: x[:, :1].astype(float), ids[:0], eos, 2, 4).shape == (0, 1)


def _check_exact(bundle_dir: Path, spec_ids: np.ndarray) -> float:
    bundle = Bundle.load(bundle_dir)
    spec = bundle.tokenizer_spec
    full = cpu_session(bundle.graph_path("text", "fp32"))
    corpus = ClipTokenizer(spec).encode(captions(CORPUS))
    worst = 0.0
    with OrtBackend(bundle, branches=("text",)) as be:
        for ids in (_every_length(spec), corpus, spec_ids):
            want = full.run(None, {"input_ids": ids})[0]
            for got in (be.encode_text(ids),  # a batch, and each row alone
                        np.concatenate([be.encode_text(ids[i:i + 1]) for i in range(len(ids))])):
                worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= EXACT, worst
    return worst


def test_small_bundle_text_graph_is_dynamic_and_cut_vectors_are_exact(
        small_bundle: Path, spec_inputs) -> None:
    entry = Bundle.load(small_bundle).graph_entry("text", "fp32")
    assert entry["inputs"]["input_ids"]["shape"] == ["batch", "seq"]  # the manifest says so
    _check_exact(small_bundle, spec_inputs[1])


@pytest.mark.slow
def test_full_b32_cut_vectors_are_exact(full_bundle: Path, spec_inputs) -> None:
    _check_exact(full_bundle, spec_inputs[1])


def test_a_bundle_with_a_fixed_length_text_graph_is_used_as_it_is(
        small_bundle: Path, tmp_path: Path) -> None:
    """A bundle exported before: text.onnx ``[batch, 50]``; encoded at full length."""
    old = with_fixed_text_length(small_bundle, tmp_path / "old")
    assert Bundle.load(old).graph_entry("text", "fp32")["inputs"]["input_ids"]["shape"] == [
        "batch", 50]
    ids = ClipTokenizer(Bundle.load(old).tokenizer_spec).encode(captions(16))
    seen: list[tuple[int, ...]] = []
    with OrtBackend(Bundle.load(old), branches=("text",)) as be, \
            OrtBackend(Bundle.load(small_bundle), branches=("text",)) as new:
        session = be._sessions["text"]
        real_run = session.run
        session.run = lambda out, feed: seen.append(feed["input_ids"].shape) or real_run(out, feed)
        got = be.encode_text(ids)
        assert seen == [(16, 50)]
        np.testing.assert_allclose(got, new.encode_text(ids), atol=EXACT, rtol=0)

"""The PyTorch PIG model against the official implementation's reference outputs.

Tolerance (tests/reference/README.md): per tensor max|a - ref| <= 1e-4 * max|ref| at fp32;
selected token indices identical and in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REFERENCE, reference_outputs

from pig.errors import CheckpointError
from pig.export.config import PigConfig, infer_from_shapes
from pig.export.model import PigModel, VideoOutputs

REL_TOL = 1e-4
VIDEO_KEYS = {  # VideoOutputs field -> reference npz key
    "embed": "video_embed", "embed_norm": "video_embed_norm",
    "clip_embed": "clip_video_embed", "clip_embed_norm": "clip_video_embed_norm",
    "topk_scores": "topk_scores", "cls_attn_maxhead": "cls_attn_maxhead",
    "generator_input_tokens": "generator_input_tokens", "pseudo_query": "pseudo_query",
    "fusioner_tokens": "fusioner_tokens",
}
TEXT_KEYS = {"embed": "text_embed", "embed_norm": "text_embed_norm"}


def assert_rel_close(got: np.ndarray, ref: np.ndarray, name: str) -> None:
    err = float(np.abs(got.astype(np.float64) - ref).max())
    limit = REL_TOL * float(np.abs(ref).max())
    assert err <= limit, f"{name}: max abs diff {err:.3g} > {limit:.3g}"


def check_against_reference(model: PigModel, inputs: tuple[np.ndarray, np.ndarray],
                            ref: dict[str, np.ndarray]) -> None:
    pixels, ids = inputs
    with torch.no_grad():
        v = model.encode_video(torch.from_numpy(pixels))
        t = model.encode_text(torch.from_numpy(ids))
    np.testing.assert_array_equal(v.topk_indices.numpy(), ref["topk_token_indices"])
    for field, key in VIDEO_KEYS.items():
        assert_rel_close(getattr(v, field).numpy(), ref[key], key)
    for field, key in TEXT_KEYS.items():
        assert_rel_close(getattr(t, field).numpy(), ref[key], key)
    sim = t.embed_norm.numpy() @ v.embed_norm.numpy().T
    assert_rel_close(sim, ref["sim_text_video"], "sim_text_video")
    assert_rel_close(v.clip_embed_norm.numpy() @ t.embed_norm.numpy().T,
                     ref["clip_sim_video_text"], "clip_sim_video_text")
    # the selector excludes the globals and in-frame CLS; the 17th candidate stays out
    assert (v.topk_scores.numpy()[:, -1] > ref["score_17th"]).all()


@pytest.mark.parametrize("config", ["small", "full"])
def test_state_dict_layout_is_official(weights_spec: dict[str, Any], config: str) -> None:
    entries = weights_spec["configs"][config]["state_dict"]
    cfg = infer_from_shapes({e["name"]: tuple(e["shape"]) for e in entries})
    with torch.device("meta"):
        sd = PigModel(cfg).state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == \
        [(e["name"], e["shape"]) for e in entries]
    assert [str(v.dtype).removeprefix("torch.") for v in sd.values()] == \
        [e["dtype"] for e in entries]


@pytest.mark.parametrize(("spec", "config", "message"), [
    ("weights_spec.json", "tiny", "weights_spec: no config 'tiny' (has "),
    ("missing.json", "small", "missing.json: cannot read the weights spec (No such file"),
])
def test_spec_weights_cli_bad_arguments(spec: str, config: str, message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from pig.export.spec_weights import main

    out = tmp_path / "w.pt"
    with pytest.raises(SystemExit) as stop:
        main([str(REFERENCE / spec), config, str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and not out.exists()
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_parity_small(small_model: PigModel, spec_inputs: tuple[np.ndarray, np.ndarray]
                      ) -> None:
    check_against_reference(small_model, spec_inputs, reference_outputs("small"))


@pytest.mark.slow
def test_parity_full(spec_weights: Any, spec_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    weights = spec_weights("full")
    model = PigModel(infer_from_shapes({k: v.shape for k, v in weights.items()})).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    check_against_reference(model, spec_inputs, reference_outputs("full"))


def test_block_attention_equals_masked_full_attention(tiny_model: PigModel) -> None:
    """The reshaped block attention is the official constant-mask attention, exactly."""
    cfg = tiny_model.cfg
    vision = tiny_model.encoder.clipmodel.vision_model
    attn = vision.encoder.layers[0].self_attn
    x = torch.randn(2, cfg.seq_len, cfg.vision_width)
    m, fl = cfg.num_global, cfg.frame_len
    frame = torch.cat([torch.full((m,), -1), torch.arange(cfg.num_frames).repeat_interleave(fl)])
    allowed = (frame[:, None] == frame[None, :]) | (frame[None, :] == -1) | (frame[:, None] == -1)
    with torch.no_grad():
        q, k, v = attn.qkv(x)
        probs = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf")).softmax(-1)
        dense = attn.merge(probs @ v)
        block, g_probs = vision.block_attention(attn, x)
    torch.testing.assert_close(block, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_probs, probs[:, :, :m], rtol=1e-6, atol=1e-7)


def test_fusioner_is_diagonal_of_official_pairwise(tiny_model: PigModel) -> None:
    """Official X-Pool computes every (video, pseudo-query) pair and keeps the diagonal."""
    fus = tiny_model.fusioner
    b, f, d = 3, tiny_model.cfg.num_fusion_tokens, tiny_model.cfg.embed_dim
    queries, tokens = torch.randn(b, d), torch.randn(b, f, d)
    with torch.no_grad():
        q = fus.cross_attn.q_proj(fus.layer_norm1(queries))  # [Q, D] (one head)
        kv = fus.layer_norm1(tokens)
        k, v = fus.cross_attn.k_proj(kv), fus.cross_attn.v_proj(kv)  # [V, F, D]
        w = (torch.einsum("vfd,qd->vqf", k, q) / d**0.5).softmax(-1)
        a = fus.layer_norm2(fus.cross_attn.out_proj(torch.einsum("vqf,vfd->vqd", w, v)))
        pairwise = fus.layer_norm3(a + fus.linear_proj(a))  # [V, Q, D]
        diag = fus(queries, tokens)
    torch.testing.assert_close(diag, torch.diagonal(pairwise, 0, 0, 1).T, rtol=1e-5, atol=1e-5)


def test_text_feature_only_depends_on_tokens_up_to_first_eos(tiny_model: PigModel) -> None:
    cfg = tiny_model.cfg
    ids = torch.full((2, cfg.text_max_length), cfg.eos_id)
    ids[:, 0], ids[:, 1:5] = cfg.bos_id, torch.arange(10, 18).reshape(2, 4)
    noisy = ids.clone()
    noisy[:, 7:] = torch.randint(1, 1000, noisy[:, 7:].shape)  # junk after EOS at 5 (and 6)
    with torch.no_grad():
        a, b = tiny_model.encode_text(ids), tiny_model.encode_text(noisy)
        alone = tiny_model.encode_text(ids[:, :6])  # nothing after the EOS at all
    torch.testing.assert_close(a.embed, b.embed, rtol=0, atol=0)
    torch.testing.assert_close(a.embed, alone.embed, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.embed_norm.norm(dim=-1), torch.ones(2))


def test_tiny_model_trains(tiny_model: PigModel) -> None:
    """Gradients reach every parameter the official model trains."""
    cfg = tiny_model.cfg
    tiny_model.train()
    pixels = torch.randn(2, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    ids = torch.full((2, cfg.text_max_length), cfg.eos_id)
    ids[:, 0], ids[:, 1:4] = cfg.bos_id, 7
    v: VideoOutputs = tiny_model.encode_video(pixels)
    t = tiny_model.encode_text(ids)
    assert v.topk_indices.dtype == torch.int64 and v.topk_indices.shape == (2, cfg.top_k)
    loss = -(v.embed_norm * t.embed_norm).sum() + (v.pseudo_query - t.embed).pow(2).mean()
    loss.backward()
    no_grad = sorted(n for n, p in tiny_model.named_parameters() if p.grad is None)
    assert no_grad == ["encoder.clipmodel.logit_scale",  # training loss only
                       "generator.clip_reconstructor.embeddings.token_embedding.weight"]
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters()
               if p.grad is not None)


def test_config_roundtrip_and_validation(tiny_config: PigConfig) -> None:
    assert PigConfig.from_dict(tiny_config.to_dict()) == tiny_config
    with pytest.raises(CheckpointError, match="vision_width"):
        PigConfig(vision_width=100, vision_heads=3)
    with pytest.raises(CheckpointError, match="unknown model config keys: nope"):
        PigConfig.from_dict({**tiny_config.to_dict(), "nope": 1})

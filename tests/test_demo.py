"""Synthetic demo data, the tiny-PIG training recipe and the retrieval metrics."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from pig.demo import synth
from pig.errors import PigError
from pig.metrics import retrieval_metrics, retrieval_ranks

# --- generator ---------------------------------------------------------------------------------

def test_generator_is_deterministic_and_seed_dependent() -> None:
    a, fa = synth.make_clip(3, "train", 7)
    b, fb = synth.make_clip(3, "train", 7)
    c, fc = synth.make_clip(4, "train", 7)
    assert a == b
    np.testing.assert_array_equal(fa, fb)
    assert (a.caption, a.spec) != (c.caption, c.spec) or not np.array_equal(fa, fc)


def test_mp4_bytes_are_reproducible(tmp_path) -> None:
    _, frames = synth.make_clip(0, "heldout", 1)
    s = synth.RenderSettings()
    synth.write_mp4(tmp_path / "a.mp4", frames, s.fps, s.crf)
    synth.write_mp4(tmp_path / "b.mp4", frames, s.fps, s.crf)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_evaluate_reports_every_row_and_the_baseline_ablation(tmp_path, capsys) -> None:
    """pig-eval on 24 generated held-out clips with the shipped model; given as its own
    ``--baseline`` the ablation row must equal the model's own CLIP-ViP row."""
    from pig.cli.eval import main
    from pig.demo import steps

    steps.ensure_clips(tmp_path / "data", 24)
    checkpoint, config = steps.model_files()
    report_path = tmp_path / "report.json"
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", str(checkpoint), "--config", str(config), "--data",
              str(tmp_path / "data"), "--baseline", str(checkpoint), "--report",
              str(report_path)])
    assert stop.value.code == 0
    report = json.loads(report_path.read_text())
    metrics = report["metrics"]
    assert set(metrics) == {"PIG (PyTorch)", "CLIP-ViP vector of the PIG",
                            "CLIP-ViP baseline model"}
    assert metrics["CLIP-ViP baseline model"] == metrics["CLIP-ViP vector of the PIG"]
    assert report["baseline_sha256"] == report["checkpoint_sha256"]
    assert report["queries"] == 24 and 0.0 < metrics["PIG (PyTorch)"]["R@1"] <= 100.0
    assert "CLIP-ViP baseline model" in capsys.readouterr().out


def test_evaluate_reports_a_folder_without_manifest_in_one_line(tmp_path, capsys) -> None:
    from pig.cli.eval import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"pig-eval: error: {tmp_path / 'missing.pt'}: no such file\n"
    with pytest.raises(PigError, match=re.escape(f"{tmp_path}: no clips.jsonl")):
        synth.load_manifest(tmp_path, "heldout")


def _words(table: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern[str]]:
    return {k: re.compile(r"\b(" + "|".join(map(re.escape, v)) + r")\b") for k, v in table.items()}


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_caption_names_exactly_its_attributes(split: str) -> None:
    shapes, sizes, motions = _words(synth.SHAPE_WORDS), _words(synth.SIZE_WORDS), _words(
        synth.MOTION_WORDS)
    for i in range(0, 400, 7):
        clip, _ = synth.make_clip(0, split, i)
        spec, text = clip.spec, clip.caption
        first, _, rest = text.partition(", beside") if ", beside" in text else text.partition(
            ", next to")
        assert [k for k, p in sizes.items() if p.search(first)] == [spec.size], text
        assert [k for k, p in motions.items() if p.search(first)] == [spec.motion], text
        named = sorted(k for k, p in shapes.items() if p.search(text))
        assert named == sorted({spec.shape, spec.second_shape} - {""}), text
        assert re.search(rf"\b{spec.colour} ", first), text
        assert re.search(rf"\b{spec.background}\b", first), text
        assert bool(rest) == bool(spec.second_shape), text
        if spec.second_shape:
            assert spec.second_colour in rest and shapes[spec.second_shape].search(rest), text


def _object_stats(frames: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid (x, y) and pixel area of the pixels painted ``colour``."""
    mask = np.all(frames == np.array(synth.COLOURS[colour], np.uint8), axis=-1)
    area = mask.sum(axis=(1, 2)).astype(float)
    ys, xs = np.indices(mask.shape[1:])
    return (mask * xs).sum(axis=(1, 2)) / area, (mask * ys).sum(axis=(1, 2)) / area, area


def _observed_motions(frames: np.ndarray, spec: synth.ClipSpec) -> list[str]:
    """The motions that the primary object's pixels ``[T, H, W, 3]`` show."""
    x, y, area = _object_stats(frames, spec.colour)
    dx, dy, growth = x[-1] - x[0], y[-1] - y[0], area[-1] / area[0]
    changed = np.count_nonzero(np.any(frames[0] != frames[-1], axis=-1))
    observed = {
        "right": dx > 10, "left": dx < -10, "down": dy > 10, "up": dy < -10,
        "growing": growth > 2.0, "shrinking": growth < 0.5,
        "rotating": abs(dx) < 6 and abs(dy) < 6 and 0.8 < growth < 1.25 and changed > 10,
        "still": changed == 0,
    }
    return [m for m, ok in observed.items() if ok]


def _distinct_clips(n: int) -> list[tuple[synth.Clip, np.ndarray]]:
    clips = (synth.make_clip(1, "train", i) for i in range(n))
    return [(c, f) for c, f in clips if not (c.spec.second_shape and
                                             c.spec.second_colour == c.spec.colour)]


def test_pixels_follow_the_motion_attribute() -> None:
    """Derive each clip's motion from its rendered pixels and compare with its attributes."""
    seen = set()
    for clip, frames in _distinct_clips(60):
        assert _observed_motions(frames, clip.spec) == [clip.spec.motion], clip.spec
        seen.add(clip.spec.motion)
    assert seen == set(synth.MOTIONS)


@pytest.mark.parametrize(("mirror", "reverse"), [(True, False), (False, True), (True, True)])
def test_augmented_pixels_follow_the_transformed_attributes(mirror: bool, reverse: bool) -> None:
    """Mirroring / reversing a clip gives frames whose observed motion is the new caption's."""
    from pig.demo.augment import transform_pixels, transform_spec

    changed = 0
    for clip, frames in _distinct_clips(60):
        batch = frames.transpose(0, 3, 1, 2)[None]  # [1, T, 3, H, W]
        out = transform_pixels(batch, np.array([mirror]), np.array([reverse]))
        spec = transform_spec(clip.spec, mirror, reverse)
        assert _observed_motions(out[0].transpose(0, 2, 3, 1), spec) == [spec.motion], spec
        assert spec.key()[:3] == clip.spec.key()[:3]  # shape, colour, size kept
        changed += spec.motion != clip.spec.motion
    assert changed > 10


def test_augmented_batch_transforms_pixels_and_attributes_together() -> None:
    from pig.demo.augment import augmented_batch, same_key_mask, transform_pixels, transform_spec

    clips = _distinct_clips(40)
    pixels = np.stack([f.transpose(0, 3, 1, 2) for _, f in clips])
    specs = [c.spec for c, _ in clips]
    rng = np.random.default_rng(0)
    idx = np.array([5, 2, 9, 0, 31, 17, 8, 22])
    px, new, captions = augmented_batch(pixels, specs, idx, rng)
    assert px.shape == (8, *pixels.shape[1:]) and len(new) == len(captions) == 8
    seen = set()
    for i, clip in enumerate(np.sort(idx)):  # read in order from the memory-mapped cache
        flags = [(m, r) for m in (False, True) for r in (False, True)
                 if np.array_equal(px[i], transform_pixels(pixels[clip:clip + 1], np.array([m]),
                                                           np.array([r]))[0])]
        assert flags and new[i] in {transform_spec(specs[clip], m, r) for m, r in flags}
        seen.update(flags)
    assert len(seen) > 1  # the transforms are drawn, not fixed
    mask = same_key_mask(new)
    for i in range(8):
        for j in range(8):
            assert mask[i, j] == (i != j and new[i].key() == new[j].key())
    # captions are drawn afresh from the transformed attributes
    motions = _words(synth.MOTION_WORDS)
    for spec, text in zip(new, captions, strict=True):
        assert [k for k, p in motions.items() if p.search(text)] == [spec.motion], text


def test_heldout_combinations_are_unseen_and_come_in_direction_pairs() -> None:
    singles = synth.heldout_singles(0)
    assert len(singles) >= 300
    units = {s.unit() for s in singles}
    train_units = {synth.make_clip(0, "train", i)[0].spec.unit() for i in range(300)}
    assert not units & train_units
    keys = {s.key() for s in singles}
    for s in singles:  # the opposite direction of every held-out clip is held out too
        other = synth.opposite(s.motion)
        if synth.valid(s.shape, other):
            assert (s.shape, s.colour, s.size, other, s.background, "", "") in keys


# --- metrics -----------------------------------------------------------------------------------

def test_ranks_on_a_hand_made_matrix() -> None:
    # 3 queries x 4 gallery clips; query i's target is clip i (distinct attributes).
    sim = np.array([
        [0.9, 0.1, 0.2, 0.3],   # target best            -> rank 1
        [0.5, 0.4, 0.6, 0.1],   # 0.5 and 0.6 beat 0.4   -> rank 3
        [0.2, 0.8, 0.7, 0.7],   # 0.8 beats, 0.7 ties    -> rank 3 (ties count against)
    ])
    keys = [("a",), ("b",), ("c",), ("d",)]
    ranks = retrieval_ranks(sim, keys[:3], keys)
    np.testing.assert_array_equal(ranks, [1, 3, 3])
    m = retrieval_metrics(ranks)
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["R@5"] == pytest.approx(100.0)
    assert m["MdR"] == 3.0
    assert m["MnR"] == pytest.approx(7 / 3)


def test_identical_attributes_count_as_correct() -> None:
    # Clips 1 and 2 share every attribute: for query 1, clip 2 scoring first is a hit, and the
    # rank is that of the best-scoring clip of the class.
    sim = np.array([
        [0.1, 0.9, 0.3],
        [0.2, 0.3, 0.8],
        [0.9, 0.5, 0.4],
    ])
    keys = [("x",), ("y",), ("y",)]
    np.testing.assert_array_equal(retrieval_ranks(sim, keys, keys), [3, 1, 2])


def test_direction_twin_accuracy_on_a_hand_made_matrix() -> None:
    from pig.demo.evaluate import direction_twin_accuracy

    base = synth.ClipSpec("star", "red", "small", "left", "white")
    specs = [base, replace(base, motion="right"), replace(base, motion="up"),
             replace(base, motion="down"), replace(base, motion="growing")]
    sim = np.zeros((5, 5))
    sim[0, 0], sim[0, 1] = 0.9, 0.1  # left: own clip wins
    sim[1, 1], sim[1, 0] = 0.2, 0.8  # right: the twin wins
    sim[2, 2], sim[2, 3] = 0.5, 0.4  # up wins; down ties its twin (a tie is not a win)
    sim[3, 3], sim[3, 2] = 0.3, 0.3
    acc = direction_twin_accuracy(sim, specs)
    assert acc["left/right"] == {"queries": 2, "percent": 50.0}
    assert acc["up/down"] == {"queries": 2, "percent": 50.0}
    assert acc["growing/shrinking"] == {"queries": 0, "percent": None}  # no shrinking twin
    assert acc["rotating/still"] == {"queries": 0, "percent": None}


def test_metrics_on_known_ranks() -> None:
    ranks = np.array([1, 2, 6, 11, 1, 30])
    m = retrieval_metrics(ranks)
    assert m == pytest.approx({"R@1": 100 * 2 / 6, "R@5": 100 * 3 / 6, "R@10": 100 * 4 / 6,
                               "MdR": 4.0, "MnR": 51 / 6})


# --- training recipe ---------------------------------------------------------------------------

def _micro_config():
    from pig.export.config import PigConfig

    return PigConfig(vision_width=32, vision_layers=1, vision_heads=2, vision_mlp=64,
                     patch_size=16, image_size=32, num_frames=4, num_proxy=2,
                     text_width=32, text_layers=1, text_heads=2, text_mlp=64,
                     gen_layers=1, gen_heads=2, gen_mlp=64, embed_dim=32, top_k=4)


def test_position_and_time_embeddings_start_as_distinct_codes() -> None:
    from pig.demo.train import make_model

    cfg = _micro_config()
    emb = make_model(cfg, seed=0).encoder.clipmodel.vision_model.embeddings
    pos, time = emb.position_embedding.weight[1:], emb.temporal_embedding[0]
    for codes in (pos, time):
        assert codes.shape[1] == cfg.vision_width
        gram = torch.cdist(codes, codes)
        off = gram[~torch.eye(len(codes), dtype=torch.bool)]
        assert off.min() > 0.1 and codes.norm(dim=1).min() > 1.0  # distinct and not small
    again = make_model(cfg, seed=0).encoder.clipmodel.vision_model.embeddings
    torch.testing.assert_close(again.temporal_embedding, emb.temporal_embedding)


def test_lr_schedule() -> None:
    from pig.demo.train import TrainSettings, lr_at

    s = TrainSettings(steps=100, lr=1.0, warmup=0.1)
    assert lr_at(0, s) == pytest.approx(0.1)  # 10 warm-up steps, linear from lr/10
    assert lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(55, s) == pytest.approx(0.5)  # half-way through the 90 decay steps
    assert lr_at(99, s) == pytest.approx(0.5 * (1 + np.cos(np.pi * 89 / 90)))


def test_losses_match_a_hand_computation() -> None:
    from pig.demo.train import losses, make_model

    model = make_model(_micro_config(), seed=1)
    g = torch.Generator().manual_seed(0)
    pv = torch.randn(3, 4, 3, 32, 32, generator=g)
    ids = torch.full((3, 50), 49407)
    ids[:, 0] = 49406
    ids[:, 1:4] = torch.randint(0, 49000, (3, 3), generator=g)
    retrieval, generation = losses(model, pv, ids)
    with torch.no_grad():
        v, t = model.encode_video(pv), model.encode_text(ids)
        scale = float(model.encoder.clipmodel.logit_scale.exp())
    vn = v.embed_norm.numpy().astype(np.float64)
    tn = t.embed_norm.numpy().astype(np.float64)
    logits = scale * vn @ tn.T

    def ce(x: np.ndarray) -> float:  # mean over rows of -log softmax(row)[row index]
        x = x - x.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(x).sum(axis=1)) - np.diag(x)))

    assert retrieval.item() == pytest.approx(ce(logits) + ce(logits.T), rel=1e-5)
    pq, te = v.pseudo_query.numpy().astype(np.float64), t.embed.numpy().astype(np.float64)
    cos = (pq * te).sum(1) / np.linalg.norm(pq, axis=1) / np.linalg.norm(te, axis=1)
    assert generation.item() == pytest.approx(np.mean(2 - 2 * cos), rel=1e-5)
    # excluded pairs (same attributes) leave both softmaxes
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 2] = exclude[2, 0] = True
    masked, _ = losses(model, pv, ids, exclude)
    kept = np.where(exclude.numpy(), -np.inf, logits)
    assert masked.item() == pytest.approx(ce(kept) + ce(kept.T), rel=1e-5)
    assert masked.item() < retrieval.item()
    # stage 1 (the CLIP-ViP baseline objective): the same InfoNCE on the projected video CLS
    clip_vip, zero = losses(model, pv, ids, exclude, objective="clip-vip")
    with torch.no_grad():
        direct = model.encode_clip_vip(pv)
    torch.testing.assert_close(direct, v.clip_embed, rtol=0, atol=1e-6)
    cn = v.clip_embed_norm.numpy().astype(np.float64)
    kept = np.where(exclude.numpy(), -np.inf, scale * cn @ tn.T)
    assert clip_vip.item() == pytest.approx(ce(kept) + ce(kept.T), rel=1e-5)
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="objective"):
        losses(model, pv, ids, objective="clip")


def test_training_smoke_on_real_clips_and_official_checkpoint_format(tmp_path) -> None:
    """A few steps on 4 generated mp4 clips through the engine data path; the fp16 checkpoint
    loads strictly with the official key structure and reproduces the fp16-rounded model."""
    from pig.demo import dataset
    from pig.demo.train import TrainSettings, fp16_state_dict, make_model, train
    from pig.engine.tokenizer import ClipTokenizer
    from pig.export.checkpoint import load_checkpoint

    cfg = _micro_config()
    clips = synth.generate(tmp_path, num_train=4, num_heldout=0, seed=5)
    pixels = dataset.clip_pixels(tmp_path, clips, cfg.recipe())
    assert pixels.shape == (4, 4, 3, 32, 32)
    model = make_model(cfg, seed=0)
    history = train(model, pixels, [c.spec for c in clips], ClipTokenizer().encode,
                    TrainSettings(steps=12, batch=4, lr=3e-3), log_every=1)
    # a CLIP-ViP stage trains the two towers and leaves the generator and fusioner untouched
    stage1 = make_model(cfg, seed=0)
    before = {k: v.clone() for k, v in stage1.state_dict().items()}
    train(stage1, pixels, [c.spec for c in clips], ClipTokenizer().encode,
          TrainSettings(steps=2, batch=4, objective="clip-vip"), log_every=1)
    changed = {k for k, v in stage1.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("encoder.") for k in changed), changed
    assert any(k.startswith("encoder.clipmodel.vision_model.") for k in changed)
    assert any(k.startswith("encoder.clipmodel.text_model.") for k in changed)
    assert history[-1]["retrieval"] < history[0]["retrieval"]  # one batch: it must overfit
    assert all(np.isfinite([h["retrieval"], h["generation"]]).all() for h in history)
    assert 1.0 <= history[-1]["logit_scale"] <= 200.0
    torch.save(fp16_state_dict(model), tmp_path / "ckpt.pt")
    loaded = load_checkpoint(tmp_path / "ckpt.pt", cfg.to_dict())
    assert loaded.config == cfg
    model.load_state_dict({k: v.float() for k, v in fp16_state_dict(model).items()})
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    with torch.no_grad():
        a, b = model.encode_video(x).embed_norm, loaded.model.encode_video(x).embed_norm
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_training_command_runs_both_stages_and_writes_a_loadable_model(tmp_path, capsys) -> None:
    """``python -m pig.demo.train``: CLIP-ViP stage, then PIG stage, one log per stage; a
    command with no steps at all is refused."""
    from pig.demo.train import TINY, main
    from pig.export.checkpoint import load_checkpoint
    from pig.export.config import load_args

    synth.generate(tmp_path / "data", num_train=4, num_heldout=2, seed=3)
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(tmp_path / "data"), "--out", str(out), "--clip-vip-steps", "2",
              "--clip-vip-lr", "1e-3", "--steps", "1", "--batch", "2", "--log-every", "1"])
    assert stop.value.code == 0
    log = json.loads((out / "train_log.json").read_text())
    assert [(st["settings"]["objective"], st["settings"]["steps"], st["settings"]["lr"])
            for st in log["stages"]] == [("clip-vip", 2, 1e-3), ("pig", 1, 5e-4)]
    assert [len(st["history"]) for st in log["stages"]] == [2, 1]
    assert all(set(st["heldout"]) == {"heldout_R@1_pig", "heldout_R@1_clip"}
               for st in log["stages"])
    assert load_checkpoint(out / "pig_tiny.pt", load_args(out / "args.json")).config == TINY
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(tmp_path / "data"), "--clip-vip-steps", "0", "--steps", "0"])
    assert stop.value.code == 2
    assert "nothing to train" in capsys.readouterr().err

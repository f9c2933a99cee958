"""What an official PIG run leaves behind, loaded exactly: args.json discovery, the resume file
``restore.pt``, the two-matrix loss variant, the refused test-time options, long queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import reference_outputs
from test_checkpoint import OFFICIAL_ARGS

from pig.cli.export import main
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, VideoIndex
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import CheckpointError, IndexStoreError
from pig.export import run_config
from pig.export.checkpoint import load_checkpoint
from pig.export.config import TWO_MATRIX_LOSS, infer_from_shapes
from pig.export.model import PigModel

ALPHA = 0.37  # not the initial 0.5, so a wrong or ignored alpha shows


def _official_args(**changes: Any) -> dict[str, Any]:
    args = json.loads(json.dumps(OFFICIAL_ARGS))
    args["loss_config"] = {"loss_name": "NCELearnableTempLoss", "if_gather": 1}
    args.update(changes)
    return args


def _two_matrix_args() -> dict[str, Any]:
    return _official_args(loss_config={"loss_name": TWO_MATRIX_LOSS, "if_gather": 1})


def _run_dir(tmp_path: Path, sd: dict[str, torch.Tensor], args: dict[str, Any] | None,
             name: str = "model_best.pt") -> Path:
    """``<output_dir>/ckpt/<name>`` and ``<output_dir>/log/args.json``, as the official script
    writes them."""
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    torch.save(sd, tmp_path / "ckpt" / name)
    if args is not None:
        (tmp_path / "log").mkdir(exist_ok=True)
        (tmp_path / "log" / "args.json").write_text(json.dumps(args))
    return tmp_path / "ckpt" / name


# --- args.json discovery ------------------------------------------------------------------

def test_config_is_found_in_the_official_layout_and_beside(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt" / "model_step_9.pt"
    ckpt.parent.mkdir()
    ckpt.touch()
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "args.json").write_text("{}")
    found, line = run_config.resolve(ckpt, None, assume_released=False)
    assert found == tmp_path / "log" / "args.json" and "found for model_step_9.pt" in line
    (ckpt.parent / "args.json").write_text("{}")
    assert run_config.resolve(ckpt, None, False)[0] == ckpt.parent / "args.json"
    given = tmp_path / "mine.json"
    assert run_config.resolve(ckpt, given, False) == (given, f"config: {given} (--config)")


def test_without_args_json_export_refuses_in_one_line(tiny_model: PigModel, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _run_dir(tmp_path, tiny_model.state_dict(), None)
    with pytest.raises(SystemExit) as stop:
        main(["--onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pig-export: error: ")
    for part in ("no args.json found", "top-k", "--config", "--assume-released-b32",
                 str(tmp_path / "log" / "args.json")):
        assert part in err, part
    assert not (tmp_path / "out").exists()


def test_assumed_released_values_are_said(tmp_path: Path) -> None:
    found, line = run_config.resolve(tmp_path / "x.pt", None, assume_released=True)
    assert found is None and "--assume-released-b32" in line


# --- restore.pt ---------------------------------------------------------------------------

def test_resume_file_loads_its_model_state_dict(tiny_model: PigModel, tmp_path: Path) -> None:
    sd = tiny_model.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    first = next(k for k, v in sd.items() if v.is_floating_point())
    resume = {"global_step": 1234, "model_state_dict": half,
              "optim_state_dict": {"state": {0: {"exp_avg": torch.ones(3)}},
                                   "param_groups": [{"lr": 3e-6, "params": [0]}]},
              "amp_state_dict": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 7}}}
    torch.save(resume, tmp_path / "restore.pt")
    ckpt = load_checkpoint(tmp_path / "restore.pt", tiny_model.cfg.to_dict())
    assert ckpt.notes[0] == ("restore.pt is a training resume file (global_step 1234): loaded "
                             "its model_state_dict; ignored amp_state_dict, global_step, "
                             "optim_state_dict")
    assert ckpt.notes[1].startswith("upcast ") and "float16" in ckpt.notes[1]
    torch.testing.assert_close(ckpt.model.state_dict()[first], half[first].float(), rtol=0,
                               atol=0)


# --- the two-matrix variant ---------------------------------------------------------------

def test_alpha_without_the_two_matrix_loss_is_refused(weights_spec: dict[str, Any]) -> None:
    shapes = {e["name"]: tuple(e["shape"]) for e in weights_spec["configs"]["full"]["state_dict"]}
    assert infer_from_shapes({**shapes, "alpha": ()}, _two_matrix_args()).two_matrix
    with pytest.raises(CheckpointError, match=r"'alpha' tensor .* loss_name = NCELearnable"):
        infer_from_shapes({**shapes, "alpha": ()}, _official_args())
    with pytest.raises(CheckpointError, match="has no 'alpha' tensor"):
        infer_from_shapes(shapes, _two_matrix_args())


def test_two_matrix_scores_equal_the_official_formula(
        spec_weights: Any, spec_inputs: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """One vector per video, ``clip_unit + alpha * fused_unit``, searched by inner product in
    the index, scores as the official evaluation: t.clip + alpha * t.fused (its sim_matrix)."""
    sd = {k: torch.from_numpy(v) for k, v in spec_weights("small").items()}
    sd["alpha"] = torch.tensor(ALPHA)
    ckpt = _run_dir(tmp_path, sd, _two_matrix_args())
    loaded = load_checkpoint(ckpt, _two_matrix_args())
    # a module's own parameters precede its children's: first, as in the official PIG module
    assert loaded.config.two_matrix and next(iter(loaded.model.state_dict())) == "alpha"
    pixels, ids = spec_inputs
    with torch.no_grad():
        vectors = loaded.model.retrieval_vector(
            loaded.model.encode_video(torch.from_numpy(pixels))).numpy()
        text = loaded.model.encode_text(torch.from_numpy(ids)).embed_norm.numpy()
    ref = reference_outputs("small")
    official = (ref["text_embed_norm"] @ ref["clip_video_embed_norm"].T
                + np.float32(ALPHA) * (ref["text_embed_norm"] @ ref["video_embed_norm"].T))
    norms = np.linalg.norm(vectors, axis=1)
    assert (np.abs(norms - 1) > 0.01).all()  # really not unit length

    index = VideoIndex.create(tmp_path / "index", fingerprint="f" * 64, dim=vectors.shape[1],
                              bundle_info={}, dtype="f32", unit_vectors=False)
    with index:
        entries = [Entry(str(tmp_path / f"v{i}.mp4"), 1, 1, "d", 12) for i in range(3)]
        index.add(entries, vectors)
        hits = index.search(text, k=3, exact=True)
    got = np.zeros_like(official)
    for q, row in enumerate(hits):
        for h in row:
            got[q, int(Path(h.path).stem[1:])] = h.score
    limit = 1e-4 * float(np.abs(official).max())
    assert float(np.abs(got - official).max()) <= limit
    assert [[int(Path(h.path).stem[1:]) for h in row] for row in hits] == \
        np.argsort(-official, axis=1, kind="stable").tolist()


def test_index_of_non_unit_vectors_refuses_i8_and_unit_index_refuses_them(
        tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError, match="i8 storage scores by cosine"):
        VideoIndex.create(tmp_path / "a", fingerprint="f" * 64, dim=4, bundle_info={},
                          dtype="i8", unit_vectors=False)
    with (VideoIndex.create(tmp_path / "b", fingerprint="f" * 64, dim=4, bundle_info={}) as idx,
          pytest.raises(IndexStoreError, match="expected unit vectors")):
        idx.add([Entry(str(tmp_path / "v.mp4"), 1, 1, "d", 1)], np.full((1, 4), 0.9))


def test_two_matrix_export_end_to_end(tiny_model: PigModel, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Official layout, args.json found automatically, a two-matrix checkpoint: the bundle's
    video graph gives clip_unit + alpha * fused_unit and its manifest says so."""
    tiny = PigModel(type(tiny_model.cfg)(**{**tiny_model.cfg.to_dict(), "two_matrix": True}))
    tiny.load_state_dict({**tiny_model.state_dict(), "alpha": torch.tensor(ALPHA)})
    args = {**_two_matrix_args(), "test_num_frms": tiny.cfg.num_frames}
    args["fusioner_config"]["num_selected_tokens"] = tiny.cfg.top_k
    args["max_txt_len"] = tiny.cfg.text_max_length
    args["clip_vision_additional_config"]["temporal_size"] = tiny.cfg.num_frames
    ckpt = _run_dir(tmp_path, tiny.state_dict(), args)
    with pytest.raises(SystemExit) as stop:
        main(["--onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "bundle")])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert f"config: {tmp_path / 'log' / 'args.json'} (found for model_best.pt" in out
    assert "clip_unit + alpha * fused_unit" in out
    bundle = Bundle.load(tmp_path / "bundle")
    assert not bundle.unit_vectors
    assert bundle.manifest["video_vector"] == {
        "formula": "clip_unit + alpha * fused_unit", "unit_length": False,
        "alpha": pytest.approx(ALPHA)}


# --- refused test-time options ------------------------------------------------------------

@pytest.mark.parametrize(("changes", "match"), [
    ({"sample_rate": 2}, "sample_rate = 2 is not supported .*random temporal jitter"),
    ({"test_n_clips": 2}, "test_n_clips = 2 is not supported"),
    ({"input_res": [288, 288]}, "input_res = \\[288, 288\\]"),
    ({"pseudo_final_alpha_add": 1}, "pseudo_final_alpha_add"),
    ({"clip_vision_additional_config": {**OFFICIAL_ARGS["clip_vision_additional_config"],
                                        "add_cls_num": 4}}, "add_cls_num = 4 but .* has 3"),
])
def test_options_changing_test_outputs_are_refused_by_name(
        weights_spec: dict[str, Any], changes: dict[str, Any], match: str) -> None:
    shapes = {e["name"]: tuple(e["shape"]) for e in weights_spec["configs"]["full"]["state_dict"]}
    with pytest.raises(CheckpointError, match=match) as err:
        infer_from_shapes(shapes, _official_args(**changes))
    assert "\n" not in str(err.value)
    infer_from_shapes(shapes, _official_args(sample_rate=0, test_n_clips=1, sample_jitter=1))


# --- long queries -------------------------------------------------------------------------

def test_truncation_is_reported_per_query() -> None:
    tok = ClipTokenizer()
    body = tok.spec.max_length - 2
    assert tok.truncated(["x " * body, "x " * (body + 1), "a dog"]) == [False, True, False]

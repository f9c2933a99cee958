"""Strict checkpoint loading, neighbour recognition, config inference and one-line errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from pig.cli.export import main
from pig.errors import CheckpointError
from pig.export.checkpoint import load_checkpoint
from pig.export.config import infer_from_shapes
from pig.export.model import PigModel

# The keys of the released MSR-VTT B/32 args.json this engine reads or checks.
OFFICIAL_ARGS = {
    "test_num_frms": 12, "max_txt_len": 50,
    "clip_vision_additional_config": {"type": "ViP", "temporal_size": 12, "add_cls_num": 3,
                                      "keep_frame_cls": 1, "use_different_frame_cls": 0,
                                      "if_use_temporal_embed": 1},
    "generator_config": {"fr_model_type": "CLIP-text-encoder", "video_mapper_type": "Linear",
                         "use_bos_embeds": 1, "num_query_token": 1,
                         "input_video_tokens_type":
                             "cls+added_cls+frame_cls+cls_attention_scores_no_overlap"},
    "fusioner_config": {"fusioner_type": "XPoolCrossAttention", "text_embeds_type": "eot-level",
                        "input_video_tokens_type": "cls+added_cls+frame_cls",
                        "select_attention_scores_type": "max", "num_selected_tokens": 16,
                        "attn_temp": 1, "num_mha_heads": 1, "num_layers": 1},
}


@pytest.fixture
def tiny_sd(tiny_model: PigModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.fixture
def tiny_args(tiny_model: PigModel) -> dict[str, Any]:
    return tiny_model.cfg.to_dict()


def _save(obj: Any, tmp_path: Path, name: str = "ckpt.pt") -> Path:
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def _video(model: PigModel) -> torch.Tensor:
    c = model.cfg
    torch.manual_seed(1)
    with torch.no_grad():
        return model.encode_video(torch.randn(2, c.num_frames, 3, c.image_size,
                                              c.image_size)).embed


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_loads_flat_and_wrapped(tiny_model: PigModel, tiny_sd: dict, tiny_args: dict,
                                tmp_path: Path, wrap: str | None) -> None:
    path = _save(tiny_sd if wrap is None else {wrap: tiny_sd, "epoch": 3}, tmp_path)
    ckpt = load_checkpoint(path, tiny_args)
    assert ckpt.config == tiny_model.cfg and ckpt.notes == []
    assert len(ckpt.sha256) == 64
    torch.testing.assert_close(_video(ckpt.model), _video(tiny_model), rtol=0, atol=0)


def test_half_precision_checkpoint_is_upcast(tiny_sd: dict, tiny_args: dict,
                                             tmp_path: Path) -> None:
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_sd.items()}
    ckpt = load_checkpoint(_save(half, tmp_path), tiny_args)
    n_float = sum(v.is_floating_point() for v in tiny_sd.values())
    assert ckpt.notes == [f"upcast {n_float} float16 tensors to float32"]
    rounded = PigModel(ckpt.config).eval()
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in half.items()})
    torch.testing.assert_close(_video(ckpt.model), _video(rounded), rtol=0, atol=0)


def test_strict_error_lists_every_problem(tiny_sd: dict, tiny_args: dict,
                                          tmp_path: Path) -> None:
    del tiny_sd["fusioner.linear_proj.bias"]
    tiny_sd["fusioner.extra.weight"] = torch.zeros(3)
    tiny_sd["encoder.clipmodel.text_projection.weight"] = torch.zeros(64, 63)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_save(tiny_sd, tmp_path), tiny_args)
    msg = str(err.value)
    assert "\n" not in msg and "ckpt.pt" in msg
    for part in ("missing: fusioner.linear_proj.bias", "unexpected: fusioner.extra.weight",
                 "shape mismatch: encoder.clipmodel.text_projection.weight [64, 63]"):
        assert part in msg


def test_fpig_checkpoint_is_refused(tiny_sd: dict, tmp_path: Path) -> None:
    tiny_sd["generator.bos_tokens"] = torch.zeros(1, 64)
    tiny_sd["generator.query_tokens"] = torch.zeros(1, 64)
    with pytest.raises(CheckpointError, match="F-Pig checkpoint"):
        load_checkpoint(_save(tiny_sd, tmp_path))


def test_clipvip_pretrained_checkpoint_is_refused(tiny_sd: dict, tmp_path: Path) -> None:
    clipvip = {k.removeprefix("encoder."): v for k, v in tiny_sd.items()
               if k.startswith("encoder.clipmodel.")}
    with pytest.raises(CheckpointError, match="CLIP-ViP pretrained checkpoint"):
        load_checkpoint(_save(clipvip, tmp_path))


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def _bad_inputs(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    files = {
        "empty": (b"", "empty file"),
        "truncated": (data[: len(data) // 2], "corrupt or truncated"),
        "text": (b"just some notes\n", "not a loadable checkpoint"),
        "binary": (bytes(range(256)) * 4, "not a loadable checkpoint"),
        "code": (pickle.dumps({"w": _RunsCode()}, protocol=2), "would import/run posix.getcwd"),
        "list": (None, "holds a list"),
    }
    out = {"missing": (tmp_path / "nope.pt", "no such file"),
           "directory": (tmp_path, "not a file")}
    for name, (content, why) in files.items():
        p = tmp_path / f"{name}.pt"
        if content is None:
            torch.save([torch.zeros(1)], p)
        else:
            p.write_bytes(content)
        out[name] = (p, why)
    return out


def test_not_a_checkpoint_gives_one_line_errors(tiny_sd: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    good = _save(tiny_sd, tmp_path, "good.pt")
    for name, (path, why) in _bad_inputs(tmp_path, good).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert why in str(err.value) and str(path) in str(err.value), name
        assert "\n" not in str(err.value), name
        with pytest.raises(SystemExit) as stop:
            main(["--onnx", "--checkpoint", str(path), "--out", str(tmp_path / "out")])
        assert stop.value.code == 2, name
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and stderr.startswith("pig-export: error: "), name
        assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def _spec_shapes(weights_spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {e["name"]: tuple(e["shape"]) for e in weights_spec["configs"]["full"]["state_dict"]}


def test_config_from_shapes_and_official_args(weights_spec: dict[str, Any]) -> None:
    shapes = _spec_shapes(weights_spec)
    default = infer_from_shapes(shapes)
    assert (default.vision_layers, default.vision_heads, default.text_heads, default.top_k,
            default.seq_len, default.text_max_length) == (12, 12, 8, 16, 604, 50)
    assert infer_from_shapes(shapes, OFFICIAL_ARGS) == default
    args = json.loads(json.dumps(OFFICIAL_ARGS))
    args["fusioner_config"]["num_selected_tokens"] = 8
    args["max_txt_len"] = 32
    custom = infer_from_shapes(shapes, args)
    assert (custom.top_k, custom.text_max_length, custom.gen_input_len) == (8, 32, 24)


@pytest.mark.parametrize(("section", "key", "value", "match"), [
    ("fusioner_config", "fusioner_type", "CoAttention", "fusioner_type = 'CoAttention'"),
    ("generator_config", "fr_model_type", "Bert-Qformer", "is not supported"),
    (None, "test_num_frms", 8, "temporal interpolation is not supported"),
])
def test_unsupported_official_args_are_refused(weights_spec: dict[str, Any], section: str | None,
                                               key: str, value: Any, match: str) -> None:
    args = json.loads(json.dumps(OFFICIAL_ARGS))
    (args[section] if section else args)[key] = value
    with pytest.raises(CheckpointError, match=match):
        infer_from_shapes(_spec_shapes(weights_spec), args)


def test_pig_config_json_must_agree_with_shapes(weights_spec: dict[str, Any],
                                                tiny_args: dict) -> None:
    with pytest.raises(CheckpointError, match="vision_width=128 \\(checkpoint: 768\\)"):
        infer_from_shapes(_spec_shapes(weights_spec), tiny_args)


def test_bad_config_file_is_one_line_exit_2(tiny_sd: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = _save(tiny_sd, tmp_path)
    (tmp_path / "args.json").write_text("{broken")
    with pytest.raises(SystemExit) as stop:
        main(["--onnx", "--checkpoint", str(good), "--config", str(tmp_path / "args.json"),
              "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "args.json: not a JSON config" in err

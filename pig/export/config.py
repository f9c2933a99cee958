"""Every size of a PIG model, inferred from checkpoint shapes plus the run's ``args.json``.

Torch-free: inference works on a ``{name: shape}`` mapping, so the runtime can read a config
back from a bundle manifest without PyTorch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.errors import CheckpointError

VISION = "encoder.clipmodel.vision_model."
TEXT = "encoder.clipmodel.text_model."
GEN = "generator.clip_reconstructor."
HEAD_WIDTH = 64  # every OpenAI CLIP tower uses 64-wide attention heads
ALPHA = "alpha"  # the two-matrix variant's learned weight of the fused score
TWO_MATRIX_LOSS = "NCELearnableTempLoss_two_matrix"

# args.json values this implementation computes; anything else is a different model.
_SUPPORTED_ARGS = {
    ("clip_vision_additional_config", "type"): "ViP",
    ("clip_vision_additional_config", "keep_frame_cls"): 1,
    ("clip_vision_additional_config", "use_different_frame_cls"): 0,
    ("clip_vision_additional_config", "if_use_temporal_embed"): 1,
    ("generator_config", "fr_model_type"): "CLIP-text-encoder",
    ("generator_config", "video_mapper_type"): "Linear",
    ("generator_config", "use_bos_embeds"): 1,
    ("generator_config", "num_query_token"): 1,
    ("generator_config", "input_video_tokens_type"):
        "cls+added_cls+frame_cls+cls_attention_scores_no_overlap",
    ("fusioner_config", "fusioner_type"): "XPoolCrossAttention",
    ("fusioner_config", "text_embeds_type"): "eot-level",
    ("fusioner_config", "input_video_tokens_type"): "cls+added_cls+frame_cls",
    ("fusioner_config", "num_layers"): 1,
}


@dataclass(frozen=True)
class PigConfig:
    """Architecture of a PIG model. Defaults are the released MSR-VTT ViT-B/32 model."""

    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    patch_size: int = 32
    image_size: int = 224
    num_frames: int = 12
    num_proxy: int = 3
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp: int = 2048
    vocab_size: int = 49408
    text_positions: int = 77
    text_max_length: int = 50
    gen_layers: int = 12
    gen_heads: int = 8
    gen_mlp: int = 2048
    gen_vocab_size: int = 49408
    gen_positions: int = 77
    embed_dim: int = 512
    top_k: int = 16
    head_reduce: str = "max"  # how the selector merges heads: "max" | "mean"
    fusion_heads: int = 1
    fusion_temp: float = 1.0
    bos_id: int = 49406
    eos_id: int = 49407
    # loss NCELearnableTempLoss_two_matrix: score = t.clip + alpha * t.fused (alpha learned)
    two_matrix: bool = False

    def __post_init__(self) -> None:
        problems = [
            f"{w} ({getattr(self, w)}) is not divisible by {h} ({getattr(self, h)})"
            for w, h in (("vision_width", "vision_heads"), ("text_width", "text_heads"),
                         ("embed_dim", "gen_heads"), ("embed_dim", "fusion_heads"))
            if getattr(self, h) <= 0 or getattr(self, w) % getattr(self, h)
        ]
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of "
                            f"patch_size {self.patch_size}")
        if not 0 < self.top_k <= self.num_frames * self.grid**2:
            problems.append(f"top_k {self.top_k} outside 1..{self.num_frames * self.grid**2}")
        if self.gen_input_len + 2 > self.gen_positions:
            problems.append(f"generator needs {self.gen_input_len + 2} positions, "
                            f"has {self.gen_positions}")
        if self.text_max_length > self.text_positions:
            problems.append(f"text_max_length {self.text_max_length} > "
                            f"text_positions {self.text_positions}")
        if self.head_reduce not in ("max", "mean"):
            problems.append(f"head_reduce {self.head_reduce!r} is not 'max' or 'mean'")
        if problems:
            raise CheckpointError("inconsistent model config: " + "; ".join(problems))

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_global(self) -> int:
        """Video CLS + proxy tokens, which attend to the whole sequence."""
        return 1 + self.num_proxy

    @property
    def frame_len(self) -> int:
        """Tokens per frame: in-frame CLS + patches."""
        return 1 + self.grid**2

    @property
    def seq_len(self) -> int:
        return self.num_global + self.num_frames * self.frame_len

    @property
    def num_fusion_tokens(self) -> int:
        """Video CLS, proxies and one in-frame CLS per frame."""
        return self.num_global + self.num_frames

    @property
    def gen_input_len(self) -> int:
        return self.num_fusion_tokens + self.top_k

    def recipe(self) -> PreprocessRecipe:
        """The official test recipe (squash + bicubic) at this model's frames and resolution."""
        return PreprocessRecipe(num_frames=self.num_frames, size=self.image_size)

    def tokenizer_spec(self) -> TokenizerSpec:
        """CLIP tokenizer settings of this model's text branch (padded with EOS)."""
        return TokenizerSpec(max_length=self.text_max_length, bos_id=self.bos_id,
                             eos_id=self.eos_id, pad_id=self.eos_id, vocab_size=self.vocab_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PigConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    def describe(self) -> str:
        """Multi-line human summary, printed by ``pig-export``."""
        return "\n".join([
            f"vision   : width {self.vision_width}, {self.vision_layers} layers, "
            f"{self.vision_heads} heads, mlp {self.vision_mlp}, patch {self.patch_size}, "
            f"image {self.image_size}, {self.num_frames} frames, {self.num_proxy} proxies "
            f"-> {self.seq_len} tokens",
            f"selector : top-{self.top_k}, heads merged by {self.head_reduce}",
            f"generator: {self.gen_layers} layers, {self.gen_heads} heads, "
            f"{self.gen_input_len + 2} positions",
            f"fusioner : {self.fusion_heads} head(s), temperature {self.fusion_temp}",
            f"text     : width {self.text_width}, {self.text_layers} layers, "
            f"{self.text_heads} heads, vocab {self.vocab_size}, max length "
            f"{self.text_max_length}",
            f"embedding: {self.embed_dim}" + (
                ", video vector clip_unit + alpha * fused_unit (two-matrix loss, not unit "
                "length)" if self.two_matrix else ""),
        ])


def _count_layers(shapes: Mapping[str, Sequence[int]], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    ids = {int(m.group(1)) for k in shapes if (m := pat.match(k))}
    if ids != set(range(len(ids))):
        raise CheckpointError(f"{prefix}encoder.layers: layer indices {sorted(ids)} "
                              "are not contiguous from 0")
    return len(ids)


def infer_from_shapes(shapes: Mapping[str, Sequence[int]],
                      args: Mapping[str, Any] | None = None) -> PigConfig:
    """Sizes from tensor shapes; heads/top-k/text length from ``args`` (args.json) or defaults.

    ``args`` may be the official run's ``args.json`` or a ``PigConfig.to_dict()`` (whose
    shape-determined fields must then agree with the checkpoint).
    """

    def shape(name: str) -> Sequence[int]:
        try:
            return shapes[name]
        except KeyError:
            raise CheckpointError(f"missing tensor {name}: cannot infer the model config") from None

    pos = shape(VISION + "embeddings.position_embedding.weight")[0]
    grid = math.isqrt(pos - 1)
    if grid * grid != pos - 1:
        raise CheckpointError(f"{VISION}embeddings.position_embedding.weight: {pos} rows is "
                              "not 1 + a square number of patches")
    patch = shape(VISION + "embeddings.patch_embedding.weight")[-1]
    vw, tw = shape(VISION + "embeddings.class_embedding")[0], \
        shape(TEXT + "embeddings.token_embedding.weight")[1]
    sized: dict[str, Any] = dict(
        vision_width=vw,
        vision_layers=_count_layers(shapes, VISION),
        vision_mlp=shape(VISION + "encoder.layers.0.mlp.fc1.weight")[0],
        patch_size=patch,
        image_size=grid * patch,
        num_frames=shape(VISION + "embeddings.temporal_embedding")[1],
        num_proxy=shape(VISION + "embeddings.added_cls")[0],
        text_width=tw,
        text_layers=_count_layers(shapes, TEXT),
        text_mlp=shape(TEXT + "encoder.layers.0.mlp.fc1.weight")[0],
        vocab_size=shape(TEXT + "embeddings.token_embedding.weight")[0],
        text_positions=shape(TEXT + "embeddings.position_embedding.weight")[0],
        gen_layers=_count_layers(shapes, GEN),
        gen_mlp=shape(GEN + "encoder.layers.0.mlp.fc1.weight")[0],
        gen_vocab_size=shape(GEN + "embeddings.token_embedding.weight")[0],
        gen_positions=shape(GEN + "embeddings.position_embedding.weight")[0],
        embed_dim=shape("encoder.clipmodel.visual_projection.weight")[0],
        two_matrix=ALPHA in shapes,
    )
    gw = shape(GEN + "embeddings.token_embedding.weight")[1]
    if gw != sized["embed_dim"]:
        raise CheckpointError(f"generator width {gw} differs from the projection dim "
                              f"{sized['embed_dim']}: not a PIG checkpoint this engine supports")
    free: dict[str, Any] = dict(vision_heads=vw // HEAD_WIDTH or 1,
                                text_heads=tw // HEAD_WIDTH or 1, gen_heads=gw // HEAD_WIDTH or 1)
    if args is not None:
        free.update(_from_args(args, sized))
    return PigConfig(**sized, **free)


def _from_args(args: Mapping[str, Any], sized: Mapping[str, int]) -> dict[str, Any]:
    if "vision_width" in args:  # a PigConfig dict
        clash = [f"{k}={args[k]} (checkpoint: {v})" for k, v in sized.items()
                 if k in args and args[k] != v]
        if clash:
            raise CheckpointError("config disagrees with the checkpoint: " + ", ".join(clash))
        return {k: v for k, v in PigConfig.from_dict({**args}).to_dict().items()
                if k not in sized}
    for (section, key), want in _SUPPORTED_ARGS.items():
        got = args.get(section, {}).get(key, want)
        if got != want:
            raise CheckpointError(f"args.json: {section}.{key} = {got!r} is not supported "
                                  f"(this engine implements {want!r})")
    out: dict[str, Any] = {}
    fus = args.get("fusioner_config", {})
    if "num_selected_tokens" in fus:
        out["top_k"] = int(fus["num_selected_tokens"])
    if "select_attention_scores_type" in fus:
        out["head_reduce"] = fus["select_attention_scores_type"]
    if "num_mha_heads" in fus:
        out["fusion_heads"] = int(fus["num_mha_heads"])
    if "attn_temp" in fus:
        out["fusion_temp"] = float(fus["attn_temp"])
    if "max_txt_len" in args:
        out["text_max_length"] = int(args["max_txt_len"])
    frames = args.get("test_num_frms", sized["num_frames"])
    if frames != sized["num_frames"]:
        raise CheckpointError(f"args.json: test_num_frms = {frames} but the checkpoint's "
                              f"temporal embedding has {sized['num_frames']} frames "
                              "(temporal interpolation is not supported)")
    _check_test_sampling(args, sized)
    _check_loss(args, bool(sized["two_matrix"]))
    return out


def _check_test_sampling(args: Mapping[str, Any], sized: Mapping[str, Any]) -> None:
    """Refuse the official test-time options that change the frames the model sees."""
    rate = args.get("sample_rate", 0)
    if rate:
        raise CheckpointError(
            f"args.json: sample_rate = {rate} is not supported (the official test then samples "
            "frames at that interval with random temporal jitter, so its vectors are not "
            "reproducible; this engine implements sample_rate 0: T frames evenly over the clip)")
    clips = args.get("test_n_clips", 1)
    if clips != 1:
        raise CheckpointError(
            f"args.json: test_n_clips = {clips} is not supported (the official test then feeds "
            f"{clips} x test_num_frms frames with a linearly interpolated temporal embedding; "
            "this engine implements test_n_clips 1)")
    res = args.get("input_res", [sized["image_size"]] * 2)
    if list(res) != [sized["image_size"]] * 2:
        raise CheckpointError(f"args.json: input_res = {list(res)} but the checkpoint's "
                              f"position embedding is for {sized['image_size']}x"
                              f"{sized['image_size']} frames (interpolation is not supported)")
    vision = args.get("clip_vision_additional_config", {})
    for key, field in (("temporal_size", "num_frames"), ("add_cls_num", "num_proxy")):
        if vision.get(key, sized[field]) != sized[field]:
            raise CheckpointError(f"args.json: clip_vision_additional_config.{key} = "
                                  f"{vision[key]} but the checkpoint has {sized[field]}")
    if "pseudo_final_alpha_add" in args:
        raise CheckpointError("args.json: pseudo_final_alpha_add is set: that variant (an extra "
                              "learned pseudo-query term) is not supported")


def _check_loss(args: Mapping[str, Any], has_alpha: bool) -> None:
    """The two-matrix loss changes the retrieval score; it and the checkpoint must agree."""
    loss = args.get("loss_config", {}).get("loss_name")
    if loss == TWO_MATRIX_LOSS and not has_alpha:
        raise CheckpointError(f"args.json: loss_name = {TWO_MATRIX_LOSS} but the checkpoint "
                              f"has no '{ALPHA}' tensor")
    if loss is not None and loss != TWO_MATRIX_LOSS and has_alpha:
        raise CheckpointError(f"the checkpoint has an '{ALPHA}' tensor (the {TWO_MATRIX_LOSS} "
                              f"variant) but args.json says loss_name = {loss}")


def load_args(path: str | Path) -> dict[str, Any]:
    """Read an ``args.json`` (or PigConfig JSON); one-line error when unreadable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{p}: not a JSON config ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p}: not a JSON object")
    return data

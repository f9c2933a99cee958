"""Shared fixtures: reference data, spec-generated weights, PIG models and an exported bundle.

Everything expensive is session-scoped and built lazily, once, by the first test that needs it.
The reference data (official PIG outputs on deterministic random weights, see
tests/reference/README.md) lives in tests/reference so the suite runs without ../shared.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "reference"

# A tiny PIG (every size shrunk, same structure) for fast, shape-generic tests. Widths are
# multiples of 64 so the default head width (64) infers the same head counts from a checkpoint.
TINY = dict(vision_width=128, vision_layers=2, vision_heads=2, vision_mlp=256, patch_size=16,
            image_size=64, num_frames=4, num_proxy=3, text_width=64, text_layers=2,
            text_heads=1, text_mlp=128, text_positions=32, text_max_length=16, gen_layers=1,
            gen_heads=1, gen_mlp=128, gen_positions=40, embed_dim=64, top_k=6)


@pytest.fixture(scope="session")
def weights_spec() -> dict[str, Any]:
    from pig.export.spec_weights import load_spec

    return load_spec(REFERENCE / "weights_spec.json")


@pytest.fixture(scope="session")
def spec_inputs(weights_spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Reference inputs: pixel_values [3, 12, 3, 224, 224] and input_ids [4, 50]."""
    from pig.export.spec_weights import spec_inputs

    return spec_inputs(weights_spec)


def reference_outputs(config: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"reference_outputs_{config}.npz") as z:
        return dict(z)


class _WeightCache:
    """Regenerates each spec config once per session (full: ~5 s, ~1 GB)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.cache = spec, {}

    def __call__(self, config: str) -> dict[str, np.ndarray]:
        from pig.export.spec_weights import generate

        if config not in self.cache:
            self.cache[config] = generate(self.spec, config)
        return self.cache[config]


@pytest.fixture(scope="session")
def spec_weights(weights_spec: dict[str, Any]) -> _WeightCache:
    """``spec_weights("small" | "full") -> {name: ndarray}`` in official order."""
    return _WeightCache(weights_spec)


@pytest.fixture(scope="session")
def small_checkpoint(spec_weights: _WeightCache, tmp_path_factory: pytest.TempPathFactory
                     ) -> Path:
    """The small reference config saved as a user's .pt checkpoint (float32)."""
    from pig.export.spec_weights import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "pig_small.pt"
    save_checkpoint(spec_weights("small"), path)
    return path


@pytest.fixture(scope="session")
def small_model(small_checkpoint: Path) -> Any:
    """``PigModel`` of the small reference config, strictly loaded, eval mode."""
    from pig.export.checkpoint import load_checkpoint

    return load_checkpoint(small_checkpoint).model


@pytest.fixture(scope="session")
def small_bundle(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported by ``pig-export --onnx`` from the small reference checkpoint; its
    console output is kept beside it in ``pig-export.log``."""
    from pig.cli.export import main

    out = tmp_path_factory.mktemp("bundle") / "small"
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        try:
            main(["--onnx", "--checkpoint", str(small_checkpoint), "--assume-released-b32",
                  "--out", str(out)])
        except SystemExit as stop:
            assert stop.code in (0, None), f"pig-export failed ({stop.code}): {log.getvalue()}"
    (out.parent / "pig-export.log").write_text(log.getvalue())
    return out


@pytest.fixture(scope="session")
def full_bundle(spec_weights: _WeightCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full B/32 reference config exported as a bundle (fp32 graphs), once a session."""
    import torch

    from pig.export import onnx_export
    from pig.export.checkpoint import LoadedCheckpoint
    from pig.export.config import infer_from_shapes
    from pig.export.model import PigModel

    weights = spec_weights("full")
    cfg = infer_from_shapes({k: v.shape for k, v in weights.items()})
    model = PigModel(cfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    out = tmp_path_factory.mktemp("full") / "bundle"
    onnx_export.export_bundle(LoadedCheckpoint(model, cfg, Path("weights_spec:full"), ""), out)
    return out


@pytest.fixture(scope="session")
def tiny_config() -> Any:
    from pig.export.config import PigConfig

    return PigConfig(**TINY)


@pytest.fixture
def tiny_model(tiny_config: Any) -> Any:
    """A freshly initialised tiny ``PigModel`` (seeded; LayerNorms and the zero-initialised
    vision embeddings perturbed so no term of the computation is trivially zero/identity)."""
    import torch

    from pig.export.model import PigModel

    torch.manual_seed(0)
    model = PigModel(tiny_config)
    emb = model.encoder.clipmodel.vision_model.embeddings
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1.0, 0.1)
                mod.bias.normal_(0.0, 0.02)
        for p in (emb.added_cls, emb.class_embedding, emb.cls_in_frames, emb.temporal_embedding):
            p.normal_(0.0, 0.1)
    return model.eval()

"""Bounded fuzzing (hypothesis, derandomised) of what pig-engine reads from untrusted files:
the bundle manifest, the index manifest and the checkpoint loader. A valid document is
mutated (a field replaced by any JSON value or deleted; a tensor dropped, reshaped, retyped
or replaced) or replaced by random bytes. The reader must accept it or raise its one-line
user error, never anything else (no crash, no traceback). About 20 s in all on 2 cores.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pig.errors import PigError
from tests.fake_bundle import FakeSizes, write_bundle
from tests.test_pipeline import make_clips

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62)
    | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a JSON document (the document itself is ``()``)."""
    out = [prefix]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


def _mutate(data: st.DataObject, doc: dict[str, Any]) -> bytes:
    """``doc`` with 1-3 mutations, or random bytes, as a file's content."""
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.binary(max_size=64))
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = data.draw(JSON)
            break
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(JSON)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("fuzz") / "b",
                        FakeSizes(frames=4, size=32, vocab=49408, length=16))


@SETTINGS
@given(data=st.data())
def test_bundle_manifest(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                         data: st.DataObject) -> None:
    from pig.engine.bundle import Bundle
    from pig.errors import BundleError

    root = tmp_path_factory.mktemp("b")
    for f in bundle_dir.iterdir():
        os.link(f, root / f.name) if f.suffix == ".onnx" else shutil.copy(f, root)
    valid = json.loads((bundle_dir / "manifest.json").read_text())
    (root / "manifest.json").write_bytes(_mutate(data, valid))
    try:
        b = Bundle.load(root)
        for branch in ("video", "text"):
            for precision in b.precisions(branch):
                b.graph_path(branch, precision)
    except BundleError as err:
        assert "\n" not in str(err)


@pytest.fixture(scope="module")
def index_dir(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pig.engine.bundle import Bundle
    from pig.engine.ingest.run import index_videos

    root = tmp_path_factory.mktemp("fuzz-index")
    make_clips(root / "clips", n=2)
    index_videos([root / "clips"], Bundle.load(bundle_dir), root / "idx")
    return root / "idx"


@SETTINGS
@given(data=st.data())
def test_index_manifest(index_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                        data: st.DataObject) -> None:
    from pig.engine.index import VideoIndex

    d = tmp_path_factory.mktemp("i") / "idx"
    shutil.copytree(index_dir, d)
    valid = json.loads((index_dir / "manifest.json").read_text())
    (d / "manifest.json").write_bytes(_mutate(data, valid))
    try:
        with VideoIndex.open(d, view=True) as vi:
            vi.counts()
    except PigError as err:
        assert "\n" not in str(err)


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    import torch

    from pig.export.config import PigConfig
    from pig.export.model import PigModel
    from tests.conftest import TINY

    torch.manual_seed(0)
    model = PigModel(PigConfig(**TINY))
    return {k: v.clone() for k, v in model.state_dict().items()}, model.cfg.to_dict()


@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_checkpoint_loader(tiny_state: tuple[dict, dict], tmp_path_factory: pytest.TempPathFactory,
                           data: st.DataObject) -> None:
    import torch

    from pig.export.checkpoint import load_checkpoint

    sd, args = dict(tiny_state[0]), tiny_state[1]
    path = tmp_path_factory.mktemp("c") / "ckpt.pt"
    if data.draw(st.integers(0, 9)) == 0:
        path.write_bytes(data.draw(st.binary(max_size=256)))
    else:
        for _ in range(data.draw(st.integers(1, 3))):
            key = data.draw(st.sampled_from(sorted(sd)))
            shape = data.draw(st.lists(st.integers(0, 4), max_size=3))
            how = data.draw(st.sampled_from(["drop", "shape", "dtype", "value", "extra",
                                             "nan"]))
            if how == "drop":
                del sd[key]
            elif how == "shape":
                sd[key] = torch.zeros(shape)
            elif how == "dtype":
                sd[key] = sd[key].to(data.draw(st.sampled_from(
                    [torch.int64, torch.bool, torch.float16, torch.bfloat16, torch.uint8])))
            elif how == "value":
                sd[key] = data.draw(st.sampled_from([1, "x", None, [1.0]]))
            elif how == "extra":
                sd[key + ".extra"] = torch.zeros(shape)
            elif sd[key].is_floating_point() and sd[key].numel():
                sd[key] = sd[key].clone().view(-1).index_fill(0, torch.tensor([0]),
                                                              float("nan")).view_as(sd[key])
        torch.save(sd, path)
    try:
        load_checkpoint(path, data.draw(st.sampled_from([args, None])))
    except PigError as err:
        assert "\n" not in str(err)

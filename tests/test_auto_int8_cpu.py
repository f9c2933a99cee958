"""``auto`` on a CPU and the ``int8-cpu`` graphs: picked when the bundle's accuracy report shows
demo R@1 within 1 point of fp32 for exactly those graphs, otherwise fp32 with the reason on the
backend line; never run on a GPU backend."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pig.engine.backends import select
from pig.engine.backends.accuracy import REPORT
from pig.engine.bundle import Bundle
from pig.errors import BackendUnavailable
from tests.fake_bundle import write_bundle

PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return Bundle.load(write_bundle(tmp_path / "bundle", precisions=PRECISIONS))


def _report(bundle: Bundle, **entry: Any) -> None:
    base = {"sha256_video": bundle.graph_sha256("video", "int8-cpu"),
            "sha256_text": bundle.graph_sha256("text", "int8-cpu"), "R@1": 79.5, "dR@1": -0.5}
    base.update(entry)
    (bundle.dir / REPORT).write_text(json.dumps({"precisions": {"int8-cpu": base}}))


def _auto(bundle: Bundle) -> select.Choice:
    *_, cpu = select.choose(bundle, "auto")
    assert (cpu.backend, cpu.device) == ("onnxruntime", "cpu")
    return cpu


def test_auto_picks_int8_cpu_within_one_point(bundle: Bundle, no_gpu: None) -> None:
    for drop in (-0.5, -1.0, 0.0, 0.8):
        _report(bundle, **{"dR@1": drop})
        c = _auto(bundle)
        assert c.precision == "int8-cpu", c
        assert f"R@1 {drop:+.1f} pt against fp32 in {REPORT}" in str(c)
    assert select.choose(bundle, "onnxruntime")[0].precision == "int8-cpu"


@pytest.mark.parametrize(("entry", "why"), [
    ({"dR@1": -1.1}, "int8-cpu R@1 -1.1 pt against fp32 in accuracy_report.json (more than 1 pt)"),
    ({"dR@1": None}, "accuracy_report.json has no R@1 for int8-cpu"),
    ({"sha256_video": "0" * 64}, "accuracy_report.json was made for other int8-cpu graphs (video)"),
    ({"sha256_text": None}, "accuracy_report.json was made for other int8-cpu graphs (text)"),
])
def test_auto_refuses_int8_cpu_with_the_reason(bundle: Bundle, no_gpu: None,
                                               entry: dict[str, Any], why: str) -> None:
    _report(bundle, **entry)
    c = _auto(bundle)
    assert c.precision == "fp32"
    assert f"fp32, int8-cpu not used: {why}" in str(c), c


def test_auto_refuses_without_a_readable_report(bundle: Bundle, no_gpu: None) -> None:
    assert "int8-cpu not used: no accuracy_report.json in the bundle" in str(_auto(bundle))
    (bundle.dir / REPORT).write_text("{not json")
    assert "accuracy_report.json has no readable int8-cpu entry" in str(_auto(bundle))
    (bundle.dir / REPORT).write_text(json.dumps({"precisions": {"int8": {"dR@1": 0.0}}}))
    assert _auto(bundle).precision == "fp32"


def test_bundle_without_int8_cpu_keeps_fp32_silently(tmp_path: Path, no_gpu: None) -> None:
    plain = Bundle.load(write_bundle(tmp_path / "b", precisions=("fp32", "int8")))
    c = _auto(plain)
    assert c.precision == "fp32" and "int8-cpu" not in str(c)


def test_explicit_precision_wins_over_the_report(bundle: Bundle, no_gpu: None) -> None:
    _report(bundle, **{"dR@1": -5.0})
    assert _auto(bundle).precision == "fp32"
    assert select.choose(bundle, "auto", "int8-cpu")[-1].precision == "int8-cpu"
    _report(bundle)
    assert select.choose(bundle, "auto", "fp32")[-1].precision == "fp32"


def test_int8_cpu_never_on_a_gpu_backend(bundle: Bundle, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(select, "ROWS", tuple(replace(r, missing=lambda: "")
                                              for r in select.ROWS))
    with pytest.raises(BackendUnavailable, match="int8-cpu graphs are made for ONNX Runtime"):
        select.choose(bundle, "tensorrt", "int8-cpu")
    with pytest.raises(BackendUnavailable, match="not onnxruntime/cuda"):
        select.choose(bundle, "onnxruntime", "int8-cpu", device="cuda")
    _report(bundle)
    choices = select.choose(bundle, "auto")  # GPU candidates keep their own preference
    assert [c.precision for c in choices] == ["fp16", "fp16", "int8-cpu"]
    only_cpu = select.choose(bundle, "auto", "int8-cpu")
    assert [(c.device, c.precision) for c in only_cpu] == [("cpu", "int8-cpu")]
    assert "int8-cpu runs on CPU only" in only_cpu[0].reason

"""The user-facing choices of ``pig-export --calibrate`` and its click options (click only, so
that importing them keeps ``pig-export --help`` fast)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

CALIBRATION_METHODS = ("max", "percentile")


def calibrate_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--calibrate`` and its options to a click command; the keyword names are those of
    :func:`pig.calibration.calibrate.calibrate_bundle` (plus ``calibrate``)."""
    options = [
        click.option("--calibrate", is_flag=True,
                     help="Write fp16 (fp32 islands), INT8 (Q/DQ, for TensorRT) and int8-cpu "
                          "(dynamic INT8, for ONNX Runtime on CPU) graphs into the bundle, "
                          "and an accuracy report against fp32."),
        click.option("--videos", type=click.Path(path_type=Path),
                     help="Folder of calibration videos (default: demo training clips)."),
        click.option("--captions", type=click.Path(path_type=Path),
                     help="Calibration captions file, one per line (with --videos)."),
        click.option("--calib-method", "method", type=click.Choice(CALIBRATION_METHODS),
                     default="max", show_default=True,
                     help="INT8 activation range: max |x|, or the 99.99th percentile of |x|."),
        click.option("--max-calib-videos", "max_videos", type=click.IntRange(1), default=64,
                     show_default=True, help="Calibration videos used (evenly spread)."),
        click.option("--eval-data", type=click.Path(path_type=Path),
                     help="pig.demo.synth folder whose held-out clips the accuracy report "
                          "ranks (default: render them)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f

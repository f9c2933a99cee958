"""The user-facing choices of ``pig-export --calibrate`` and its click options (click only, so
that importing them keeps ``pig-export --help`` fast)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

CALIBRATION_METHODS = ("max", "percentile")


def calibrate_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--calibrate`` and its options to a click command (keywords ``calibrate``,
    ``calib_data``, ``calib_captions``, ``method``, ``max_videos`` and those of
    :func:`eval_data_options`)."""
    options = [
        click.option("--calibrate", is_flag=True,
                     help="Write fp16 (fp32 islands), INT8 (Q/DQ, for TensorRT) and int8-cpu "
                          "(dynamic INT8, for ONNX Runtime on CPU) graphs into the bundle, "
                          "and an accuracy report against fp32."),
        click.option("--calib-data", type=click.Path(path_type=Path),
                     help="Folder of calibration videos, with --calib-captions (default: the "
                          "--eval-data videos when given, else demo training clips)."),
        click.option("--calib-captions", type=click.Path(path_type=Path),
                     help="Captions of --calib-data: a video,caption CSV or JSON lines."),
        click.option("--calib-method", "method", type=click.Choice(CALIBRATION_METHODS),
                     default="max", show_default=True,
                     help="INT8 activation range: max |x|, or the 99.99th percentile of |x|."),
        click.option("--max-calib-videos", "max_videos", type=click.IntRange(1), default=64,
                     show_default=True, help="Calibration videos used (evenly spread)."),
        *eval_data_options("--eval-data"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def eval_data_options(folder_flag: str) -> list[Callable[[Any], Any]]:
    """The options naming the captioned videos an accuracy report runs on (keywords
    ``eval_data``, ``captions``, ``max_eval_videos``): ``folder_flag`` (``--eval-data`` of
    ``pig-export``, ``--videos`` of ``pig-eval``) and ``--captions``."""
    return [
        click.option(folder_flag, "eval_data", type=click.Path(path_type=Path),
                     help="Folder of captioned videos the accuracy report ranks, with "
                          "--captions (or a pig.demo.synth folder; default: demo held-out "
                          "clips)."),
        click.option("--captions", type=click.Path(path_type=Path),
                     help=f"Captions of {folder_flag}: a CSV with the header video,caption or "
                          'JSON lines {"video": ..., "caption": ...}; videos relative to the '
                          "folder, several captions per video allowed."),
        click.option("--max-eval-videos", type=click.IntRange(1), default=None,
                     help="Videos of the report's set used (evenly spread; default all)."),
    ]

"""``pig-export``: turn a PIG checkpoint into a bundle.

One command whose action flags run in a fixed order on the same ``--out`` bundle:
``--onnx`` (checkpoint -> fp32 graphs + manifest, :mod:`pig.export`), then further actions
(``--calibrate``, :mod:`pig.calibration`; ``--trt``, :mod:`pig.engine.trt`) that read the bundle
``--onnx`` wrote or that already exists. It lives above the three packages it drives. Errors:
:mod:`pig.console`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from pig import console
from pig.calibration.options import calibrate_options
from pig.engine.graphs import (
    BRANCHES,
    CALIBRATED_PRECISIONS,
    CPU_ONLY_PRECISIONS,
    PRECISIONS,
)
from pig.engine.trt.profiles import BatchProfile
from pig.errors import PigError


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Print ``[stage] name ...`` and its wall time when it ends."""
    click.echo(f"[stage] {name} ...", nl=False)
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        click.echo(" failed")
        raise
    click.echo(f" {time.perf_counter() - t0:.1f} s")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def run_onnx(checkpoint: Path, config: Path | None, assume_released: bool, out: Path) -> None:
    # torch is imported here so that `pig-export --help` stays fast
    from pig.export import run_config
    from pig.export.checkpoint import load_checkpoint, read_state_dict, refuse_neighbours
    from pig.export.config import load_args
    from pig.export.onnx_export import REL_TOL, export_bundle

    try:
        config, which = run_config.resolve(checkpoint, config, assume_released)
    except PigError:
        refuse_neighbours(read_state_dict(checkpoint), checkpoint)  # a bad file says so first
        raise
    click.echo(which)
    args = load_args(config) if config else None
    with stage(f"load checkpoint {checkpoint}"):
        ckpt = load_checkpoint(checkpoint, args)
    for note in ckpt.notes:
        click.echo(f"note: {note}")
    source = f"shapes of {checkpoint.name}" + (f" + {config.name}" if config else
                                               " + released B/32 values")
    click.echo(f"resolved config ({source}):")
    click.echo("  " + ckpt.config.describe().replace("\n", "\n  "))
    result = export_bundle(ckpt, out, stage)
    click.echo(f"bundle {result.out_dir} (fingerprint {result.manifest['fingerprint'][:16]}):")
    for name, size in result.files.items():
        click.echo(f"  {name:<16} {_human(size):>10}")
    p = result.parity
    click.echo(f"parity ONNX Runtime vs PyTorch (max abs, limit {REL_TOL:g} x max): "
               f"video {p['video_max_abs']:.2e}, clip {p['video_clip_max_abs']:.2e}, "
               f"text {p['text_max_abs']:.2e}; top-k indices "
               f"{'identical' if p['topk_indices_equal'] else 'DIFFER'}")


def run_calibrate(out: Path, precisions: Sequence[str], calib_data: Path | None,
                  calib_captions: Path | None, eval_data: Path | None, captions: Path | None,
                  max_eval_videos: int | None, method: str, max_videos: int) -> None:
    """Write the precision graphs and print the accuracy report."""
    from pig.calibration.calibrate import PASSES, calibrate_bundle
    from pig.calibration.report import format_report
    from pig.cli.datasets import calibration_data, evaluation_set

    evaluation = evaluation_set(eval_data, captions, "--eval-data")
    calibration = calibration_data(calib_data, calib_captions, evaluation, max(max_videos, 256))
    if calibration is evaluation and any(PASSES[p].needs_data for p in precisions):
        click.echo("note: calibrating on the evaluation videos (--calib-data not given)")
    report = calibrate_bundle(out, calibration, evaluation, precisions, method,
                              max_videos=max_videos, max_eval_videos=max_eval_videos,
                              log=click.echo)
    click.echo(format_report(report))


def _batch_profile(_ctx: click.Context, _param: click.Parameter, text: str) -> BatchProfile:
    try:
        return BatchProfile.parse(text)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _compute_capabilities(_ctx: click.Context, _param: click.Parameter,
                          text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    ccs = tuple(c.strip() for c in text.split(","))
    bad = [c for c in ccs if not re.fullmatch(r"\d{1,2}\.\d", c)]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not a compute capability like 8.6")
    return ccs


def run_trt(out: Path, precision: str, profile: BatchProfile, workspace_gib: float,
            targets: tuple[str, ...] | None = None) -> None:
    """Build (or find in the plan cache) the TensorRT engine of every requested precision."""
    from pig.engine.bundle import Bundle
    from pig.engine.trt.build import build_engines

    bundle = Bundle.load(out)
    present = sorted({p for b in BRANCHES for p in bundle.precisions(b)
                      if p not in CPU_ONLY_PRECISIONS})
    wanted = present if precision == "all" else [precision]
    for p in wanted:
        with stage(f"TensorRT {p} engines, batch profile {profile.tag()}"):
            plans = build_engines(bundle, p, profile, workspace=int(workspace_gib * (1 << 30)),
                                  targets=targets)
        for branch, plan in plans.items():
            click.echo(f"  {branch:<6} {plan} ({_human(plan.stat().st_size)})")


@click.command(context_settings=console.CONTEXT)
@click.option("--onnx", "do_onnx", is_flag=True,
              help="Export the checkpoint to fp32 ONNX graphs + manifest in --out.")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="PIG state_dict (.pt/.pth/.bin), needed by --onnx.")
@click.option("--config", type=click.Path(path_type=Path),
              help="The run's args.json (default: found beside the checkpoint or in "
                   "../log/ as the official script writes it).")
@click.option("--assume-released-b32", "assume_released", is_flag=True,
              help="Without an args.json: use the released MSR-VTT B/32 values for top-k, "
                   "heads, temperature, text length and loss.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Bundle directory (created by --onnx; must not exist or be empty).")
@click.option("--precision", type=click.Choice([*PRECISIONS, "all"]), default="all",
              show_default=True,
              help="Precision graphs --calibrate writes (fp16, int8) and --trt builds engines for.")
@calibrate_options
@click.option("--trt", "do_trt", is_flag=True,
              help="Build TensorRT engines into --out/trt, cached by key: for the GPU present, "
                   "or, with TensorRT-RTX and no GPU, ahead of time for --compute-capability.")
@click.option("--compute-capability", "targets", callback=_compute_capabilities,
              help="TensorRT-RTX targets, e.g. 8.6,8.9,12.0 (default: the GPU present, else "
                   "8.0,8.6,8.9,12.0); the engines then run on any of them.")
@click.option("--batch-profile", default="1,8,64", show_default=True, callback=_batch_profile,
              help="TensorRT optimisation profile batch sizes: MIN,OPT,MAX (or MAX).")
@click.option("--workspace-gib", type=click.FloatRange(0.25), default=4.0, show_default=True,
              help="TensorRT builder workspace limit.")
def cli(do_onnx: bool, checkpoint: Path | None, config: Path | None, assume_released: bool,
        out: Path, precision: str, calibrate: bool, do_trt: bool, targets: tuple[str, ...] | None,
        batch_profile: BatchProfile, workspace_gib: float, **calibration: Any) -> None:
    """Export a PIG checkpoint to a pig-engine bundle."""
    if not (do_onnx or calibrate or do_trt):
        raise click.UsageError("nothing to do: give an action flag (--onnx, --calibrate, --trt)")
    if do_trt and precision in CPU_ONLY_PRECISIONS:
        raise click.UsageError(f"--trt: {precision} graphs are for ONNX Runtime on CPU; "
                               "TensorRT takes fp32, fp16 or int8")
    if calibrate and precision == "fp32":
        raise click.UsageError("--calibrate writes fp16/int8 graphs; --precision fp32 has none")
    if do_onnx:
        if checkpoint is None:
            raise click.UsageError("--onnx needs --checkpoint")
        if config is not None and assume_released:
            raise click.UsageError("--config and --assume-released-b32 exclude each other")
        from pig.engine.bundle import check_new_bundle_dir

        check_new_bundle_dir(out)  # before the checkpoint is loaded (half a minute for B/32)
        run_onnx(checkpoint, config, assume_released, out)
    if calibrate:
        run_calibrate(out, CALIBRATED_PRECISIONS if precision == "all" else (precision,),
                      **calibration)
    if do_trt:
        run_trt(out, precision, batch_profile, workspace_gib, targets)


def main(argv: list[str] | None = None) -> None:
    console.run(cli, argv, "pig-export")


if __name__ == "__main__":
    main()

"""``pig-eval``: retrieval accuracy of a model.

Two modes. With ``--videos DIR --captions FILE`` (a user's captioned videos): every
precision of ``--bundle`` in ONNX Runtime on CPU, R@1/5/10, median rank and cosine to fp32
(:func:`pig.calibration.report.accuracy_report`). Otherwise the demo evaluation of a
checkpoint on the held-out synthetic clips: PyTorch, ONNX Runtime and the ablation
(:mod:`pig.demo.evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pig import console
from pig.calibration.options import eval_data_options
from pig.engine.graphs import PRECISIONS

_PATH = click.Path(path_type=Path)


def _write(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def bundle_report(bundle_dir: Path, eval_data: Path | None, captions: Path | None,
                  max_eval_videos: int | None, precisions: tuple[str, ...]) -> dict[str, Any]:
    """The accuracy report of the bundle's precisions against fp32 on the given videos."""
    from pig.calibration.report import accuracy_report
    from pig.cli.datasets import evaluation_set
    from pig.engine.bundle import Bundle

    data = evaluation_set(eval_data, captions, "--videos")
    bundle = Bundle.load(bundle_dir)
    present = [p for p in PRECISIONS if p != "fp32"
               and all(p in bundle.precisions(b) for b in ("video", "text"))]
    missing = [p for p in precisions if p != "fp32" and p not in present]
    if missing:
        raise click.UsageError(f"--precision {missing[0]}: {bundle_dir} has no {missing[0]} "
                               "graphs (pig-export --calibrate writes them)")
    chosen = [p for p in present if not precisions or p in precisions]
    return accuracy_report(bundle, chosen, data, max_eval_videos)


def _eval_options(f: Any) -> Any:
    for option in reversed(eval_data_options("--videos")):
        f = option(f)
    return f


HELP = ("Retrieval accuracy: a bundle on your captioned videos (--videos, --captions), or the "
        "demo model on its held-out clips.")


@click.command(context_settings=console.CONTEXT, help=HELP)
@click.option("--bundle", type=_PATH, default=None,
              help="pig-export output: with --videos, the bundle evaluated; in the demo "
                   "evaluation, adds the ONNX Runtime fp32 row")
@_eval_options
@click.option("--precision", "precisions", type=click.Choice(PRECISIONS), multiple=True,
              help="with --videos: precisions compared with fp32 (repeatable; default every "
                   "one in the bundle)")
@click.option("--checkpoint", type=_PATH, default=Path("models/pig-tiny/pig_tiny.pt"),
              show_default=True, help="demo evaluation: the PyTorch checkpoint")
@click.option("--config", type=_PATH, default=Path("models/pig-tiny/args.json"),
              show_default=True, help="demo evaluation: its args.json")
@click.option("--data", type=_PATH, default=Path("demo_out/synth"), show_default=True,
              help="demo evaluation: output of python -m pig.demo.synth")
@click.option("--baseline", type=_PATH, default=None,
              help="demo evaluation: a checkpoint trained with the CLIP-ViP objective only "
                   "(same config); adds its CLIP-ViP vector as the ablation row")
@click.option("--report", "report_path", type=_PATH, default=None,
              help="write the report as JSON here")
def cli(bundle: Path | None, eval_data: Path | None, captions: Path | None,
        max_eval_videos: int | None, precisions: tuple[str, ...], checkpoint: Path,
        config: Path, data: Path, baseline: Path | None, report_path: Path | None) -> None:
    if eval_data is not None or captions is not None:
        if bundle is None:
            raise click.UsageError("--videos needs --bundle (the bundle to evaluate)")
        from pig.calibration.report import format_report

        report = bundle_report(bundle, eval_data, captions, max_eval_videos, precisions)
        click.echo(format_report(report))
    else:
        from pig.demo.evaluate import evaluate, format_demo_report

        report = evaluate(checkpoint, config, data, bundle, baseline)
        click.echo(format_demo_report(report))
    _write(report, report_path)


def main(argv: list[str] | None = None) -> None:
    """``pig-eval`` (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "pig-eval")


if __name__ == "__main__":
    main()

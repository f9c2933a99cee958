"""Which captioned videos ``pig-export --calibrate`` and ``pig-eval`` use: a user's folder and
captions file (:class:`pig.calibration.data.CaptionedFolder`), or the demo clips
(:class:`pig.demo.dataset.DemoClips`)."""

from __future__ import annotations

from pathlib import Path

import click

from pig.calibration.data import CaptionedFolder, CaptionedVideos
from pig.demo import synth
from pig.demo.dataset import DemoClips

DEMO_EVAL_CLIPS = 600  # the demo's held-out clips the report ranks by default


def evaluation_set(folder: Path | None, captions: Path | None, folder_flag: str
                   ) -> CaptionedVideos:
    """``folder`` + ``captions``; ``folder`` alone must be a ``pig.demo.synth`` output (its
    held-out clips); neither: the demo's held-out clips, rendered."""
    if folder is None:
        if captions is not None:
            raise click.UsageError(f"--captions needs {folder_flag} (the folder of its videos)")
        return DemoClips("heldout", DEMO_EVAL_CLIPS)
    if captions is not None:
        return CaptionedFolder(folder, captions)
    if (folder / synth.MANIFEST).is_file():
        return DemoClips("heldout", DEMO_EVAL_CLIPS, folder=folder)
    raise click.UsageError(f"{folder_flag} {folder}: give its --captions file (video,caption "
                           "CSV or JSON lines)")


def calibration_data(folder: Path | None, captions: Path | None,
                     evaluation: CaptionedVideos, count: int) -> CaptionedVideos:
    """``folder`` + ``captions``; neither: the user's evaluation set when it is one, else
    ``count`` demo training clips."""
    if (folder is None) != (captions is None):
        raise click.UsageError("calibration needs both --calib-data and --calib-captions (or "
                               "neither)")
    if folder is not None and captions is not None:
        return CaptionedFolder(folder, captions)
    if isinstance(evaluation, CaptionedFolder):
        return evaluation
    return DemoClips("train", count)

"""Moment search on long videos made of held-out clips with known spans (issue 11).

Each long video concatenates ``per_video`` held-out clips (2 s each, re-encoded as one H.264
stream), so every caption has a true span. Three indexes of the same videos: windows that
line up with the clips (``--segment-seconds`` = clip length), windows that do not (1.5x the
clip length), and clip-length windows every half clip (overlap: half of them straddle two
clips). Per caption, the top-1 segment (``--group-by segment``) is scored by its temporal IoU
with the span of a correct clip in the same file (the demo's correctness rule: equal
attributes): moment R@1 at IoU >= 0.5 and >= 0.7, and file-level R@1 (the top file holds a
correct clip). Beside them, the clip-level R@1 of the same model on the plain clips.

``python -m pig.demo.moments [--heldout N]``; ``make demo`` runs it too.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import click
import numpy as np

from pig import console
from pig.demo import steps, synth
from pig.engine.bundle import Bundle
from pig.engine.ingest.run import index_videos
from pig.engine.media.segments import Segmenting, format_span
from pig.engine.query.engine import QueryEngine
from pig.errors import PigError

PER_VIDEO = 16
STAMP = "long.json"


@dataclass(frozen=True)
class Placed:
    """A clip inside a long video: the clip and its span in seconds."""

    clip: synth.Clip
    start_s: float
    end_s: float


def build_long_videos(clips_root: Path, clips: list[synth.Clip], out: Path,
                      per_video: int = PER_VIDEO) -> dict[str, list[Placed]]:
    """Long videos under ``out`` (cached): absolute path -> its clips with their spans."""
    s = synth.RenderSettings()
    clip_s = s.num_frames / s.fps
    groups = [clips[i : i + per_video] for i in range(0, len(clips) - per_video + 1, per_video)]
    layout = {str((out / f"long_{g:03d}.mp4").absolute()): [
        Placed(c, j * clip_s, (j + 1) * clip_s) for j, c in enumerate(group)]
        for g, group in enumerate(groups)}
    want = {"clips": [c.path for c in clips], "per_video": per_video}
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(
            Path(p).is_file() for p in layout):
        return layout
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path, placed in layout.items():
        frames = np.concatenate([_decode(clips_root / p.clip.path) for p in placed])
        synth.write_mp4(Path(path), frames, s.fps, s.crf)
    stamp.write_text(json.dumps(want) + "\n")
    return layout


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def moment_metrics(searcher: QueryEngine, layout: dict[str, list[Placed]]) -> dict[str, float]:
    """Moment R@1 at IoU >= 0.5 / 0.7 and file-level R@1 (percent) over every caption."""
    placed = [p for ps in layout.values() for p in ps]
    seg_hits = searcher.search([p.clip.caption for p in placed], 1, group_by="segment")
    file_hits = searcher.search([p.clip.caption for p in placed], 1)
    best_iou, file_ok = [], []
    for query, (seg,), (top,) in zip(placed, seg_hits, file_hits, strict=True):
        key = query.clip.spec.key()
        correct = {path: [(p.start_s, p.end_s) for p in ps if p.clip.spec.key() == key]
                   for path, ps in layout.items()}
        spans = correct.get(seg.path, [])
        best_iou.append(max((iou((seg.start_s, seg.end_s or 0.0), s) for s in spans),
                            default=0.0))
        file_ok.append(bool(correct.get(top.path)))
    x = np.asarray(best_iou)
    return {"moment R@1 IoU>=0.5": 100 * float(np.mean(x >= 0.5)),
            "moment R@1 IoU>=0.7": 100 * float(np.mean(x >= 0.7)),
            "file R@1": 100 * float(np.mean(file_ok)), "captions": float(len(placed))}


def evaluate(clips_root: Path, clips: list[synth.Clip], bundle: Bundle, out: Path,
             say: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Build the long videos, index them with aligned and misaligned windows, measure."""
    s = synth.RenderSettings()
    clip_s = s.num_frames / s.fps
    layout = build_long_videos(clips_root, clips, out / "long")
    results = {}
    variants = {"aligned": Segmenting(mode="fixed", seconds=clip_s),
                "misaligned": Segmenting(mode="fixed", seconds=1.5 * clip_s),
                "overlapping": Segmenting(mode="fixed", seconds=clip_s, stride=clip_s / 2)}
    for name, setting in variants.items():
        index_dir = out / f"index-{name}"
        if index_dir.exists():
            shutil.rmtree(index_dir)
        t0 = time.perf_counter()
        report = index_videos([out / "long"], bundle, index_dir, segmenting=setting,
                              dtype="f32", log=lambda _: None)
        if report.failed:
            raise PigError(f"{index_dir}: long demo videos failed to index: {report.failed}")
        with QueryEngine(index_dir, log=lambda _: None) as searcher:
            results[f"{name}: {setting.describe()}"] = moment_metrics(searcher, layout)
            if name == "aligned":
                example = layout[next(iter(layout))][5]
                hits = searcher.search([example.clip.caption], 3)[0]
        say(f"      indexed {len(layout)} long videos ({PER_VIDEO * clip_s:g} s each), "
            f"{setting.describe()}: {report.segments} segments, "
            f"{time.perf_counter() - t0:.0f} s")
    say(f'\nmoment search: "{example.clip.caption}"   (true: '
        f"{Path(next(p for p, ps in layout.items() if example in ps)).name} "
        f"{format_span(example.start_s, example.end_s)})")
    for rank, h in enumerate(hits, 1):
        say(f"  {rank}. {h.score:6.3f}  {format_span(h.start_s, h.end_s)}  {Path(h.path).name}")
    return results


def format_results(results: dict[str, dict[str, float]], clip_r1: float) -> str:
    cols = ("moment R@1 IoU>=0.5", "moment R@1 IoU>=0.7", "file R@1")
    width = max(map(len, results)) + 2
    lines = [f"{'':{width}}" + "".join(f"{c:>22}" for c in cols)]
    for name, m in results.items():
        lines.append(f"{name:{width}}" + "".join(f"{m[c]:21.1f}%" for c in cols))
    lines.append(f"clip-level R@1 of the same model on the plain clips: {clip_r1:.1f}%")
    return "\n".join(lines)


@click.command(context_settings=console.CONTEXT, help=__doc__.splitlines()[0])
@click.option("--heldout", type=click.IntRange(1), default=600, show_default=True,
              help="held-out clips to use")
def cli(heldout: int) -> None:
    clips = steps.ensure_clips(steps.OUT / "heldout", heldout)
    bundle = steps.ensure_bundle(*steps.model_files(), steps.BUNDLE)
    steps.ensure_index(steps.OUT / "heldout", clips, bundle, steps.OUT / "index")
    with QueryEngine(steps.OUT / "index", log=lambda _: None) as searcher:
        ranks, _ = steps.engine_ranks(searcher, clips, steps.OUT / "heldout", k=10)
    results = evaluate(steps.OUT / "heldout", clips, bundle, steps.OUT)
    print(format_results(results, 100 * float(np.mean(ranks <= 1))))


def main(argv: list[str] | None = None) -> None:
    """``python -m pig.demo.moments`` (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "python -m pig.demo.moments")


if __name__ == "__main__":
    main()

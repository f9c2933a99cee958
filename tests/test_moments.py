"""The long-video moment evaluation of the demo (pig.demo.moments): layout and IoU."""

from __future__ import annotations

from pathlib import Path

import pytest

from pig.demo import moments, synth
from pig.engine.media.segments import Segmenting
from pig.engine.media.video import read_segments


def test_iou() -> None:
    assert moments.iou((0, 2), (0, 2)) == 1
    assert moments.iou((0, 3), (0, 2)) == pytest.approx(2 / 3)
    assert moments.iou((1, 3), (0, 2)) == pytest.approx(1 / 3)
    assert moments.iou((2, 4), (0, 2)) == 0


def test_long_videos_hold_the_clips_at_their_spans(tmp_path: Path) -> None:
    clips = synth.generate(tmp_path / "clips", 0, 4)
    layout = moments.build_long_videos(tmp_path / "clips", clips, tmp_path / "long", per_video=2)
    assert len(layout) == 2
    clip_s = synth.RenderSettings().num_frames / synth.RenderSettings().fps
    for path, placed in layout.items():
        assert [(p.start_s, p.end_s) for p in placed] == [(0, clip_s), (clip_s, 2 * clip_s)]
        segs = list(read_segments(path, 4, Segmenting(mode="fixed", seconds=clip_s)))
        assert [(s.start_s, s.end_s) for s in segs] == [(0, clip_s), (clip_s, 2 * clip_s)]
        n = synth.RenderSettings().num_frames
        assert [s.indices[[0, -1]].tolist() for s in segs] == [[0, n - 1], [n, 2 * n - 1]]
    mtimes = {p: Path(p).stat().st_mtime_ns for p in layout}
    assert moments.build_long_videos(tmp_path / "clips", clips, tmp_path / "long",
                                     per_video=2) == layout  # cached
    assert {p: Path(p).stat().st_mtime_ns for p in layout} == mtimes

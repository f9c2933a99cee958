"""Segmenting: how a file's timeline is cut into the segments that each get one vector.

An index setting, fixed when the index is created and recorded in its manifest:

* ``auto`` (default): a file no longer than ``whole_max`` seconds (30) is one whole-video
  segment (PIG's official semantics, the same vector as before segments existed); a longer one
  gets windows of ``seconds`` (10) starting every ``stride`` seconds.
* ``fixed``: windows of ``seconds`` every ``stride`` for every file; ``seconds = 0`` is one
  whole-video segment per file.
* ``shots``: shot boundaries from PySceneDetect (:mod:`pig.engine.media.shots`); a shot shorter than
  ``shot_min`` seconds is merged into its neighbour, a shot longer than ``seconds`` is cut into
  windows as above.

Windows (:func:`windows`): ``[start + i*stride, start + i*stride + seconds]`` while they fit;
the rest of the file becomes one clipped window, or, when shorter than half a window, joins
the window before. A file shorter than one window is one segment covering it. Times are
seconds from the file's first frame (what a player shows as 0:00).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any, Literal

from pig.engine.limits import MIN_SEGMENT_SECONDS
from pig.errors import PigError

Mode = Literal["auto", "fixed", "shots"]
MODES: tuple[Mode, ...] = ("auto", "fixed", "shots")
Span = tuple[float, float]

_EPS = 1e-6  # seconds: window arithmetic tolerance (float steps of the stride)


@dataclass(frozen=True)
class Segmenting:
    """The segmenting setting of an index (see the module docstring for the modes)."""

    mode: Mode = "auto"
    seconds: float = 10.0
    stride: float | None = None  # None: = seconds (no overlap)
    whole_max: float = 30.0
    shot_min: float = 2.0

    def __post_init__(self) -> None:
        for name in ("seconds", "stride", "whole_max", "shot_min"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float)
                                          and not isinstance(value, bool) and math.isfinite(value)):
                raise PigError(f"segment {name} must be a finite number of seconds, got {value!r}")
        if 0 < self.seconds < MIN_SEGMENT_SECONDS or (
                self.stride is not None and 0 < self.stride < MIN_SEGMENT_SECONDS):
            raise PigError(f"segment windows and strides must be at least {MIN_SEGMENT_SECONDS} s "
                           "(a file would become unboundedly many segments), got "
                           f"{self.seconds:g} s windows every {self.step:g} s")
        if self.mode not in MODES:
            raise PigError(f"unknown segmenting mode {self.mode!r} (choose from {MODES})")
        if self.seconds < 0 or (self.seconds == 0 and self.mode != "fixed"):
            raise PigError(f"segment seconds must be > 0 for mode {self.mode} "
                           f"(0 = whole video needs mode fixed), got {self.seconds}")
        if self.stride is not None and not 0 < self.stride <= max(self.seconds, 0):
            raise PigError(f"segment stride must be in (0, {self.seconds}] seconds (a larger "
                           f"one would leave gaps), got {self.stride}")
        if self.whole_max < 0 or self.shot_min < 0:
            raise PigError("whole_max and shot_min must be >= 0 seconds")

    @property
    def step(self) -> float:
        return self.stride if self.stride is not None else self.seconds

    @property
    def whole(self) -> bool:
        """Every file is one whole-video segment."""
        return self.mode == "fixed" and self.seconds == 0

    def whole_for(self, duration: float) -> bool:
        """Whether a file of ``duration`` seconds is one whole-video segment."""
        return self.whole or (self.mode == "auto" and duration <= self.whole_max + _EPS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segmenting:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise PigError(f"unknown segmenting fields {sorted(unknown)}")
        return cls(**d)

    def describe(self) -> str:
        """One line naming the setting, e.g. ``auto (whole up to 30 s, else 10 s windows)``."""
        win = f"{self.seconds:g} s windows" + (
            f" every {self.step:g} s" if self.step != self.seconds else "")
        if self.whole:
            return "whole video (one segment per file)"
        if self.mode == "auto":
            return f"auto (whole video up to {self.whole_max:g} s, else {win})"
        if self.mode == "fixed":
            return f"fixed ({win})"
        return f"shots (merged below {self.shot_min:g} s, longer ones cut into {win})"


WHOLE = Segmenting(mode="fixed", seconds=0.0)  # what indexes made before segments hold


def windows(start: float, end: float, seconds: float, stride: float | None = None,
            times: Sequence[float] | None = None) -> list[Span]:
    """Windows of ``seconds`` every ``stride`` over ``[start, end]`` (see module docstring).

    ``times`` (sorted frame times): windows that would hold none of them are passed over in
    one step, so the count is bounded by the frames that exist, whatever the timestamps
    claim (a pts jump of 1e9 s is one step, not 1e8 windows)."""
    step = stride if stride is not None else seconds
    if seconds <= 0 or step <= 0:
        raise ValueError(f"need seconds > 0 and stride > 0, got {seconds}, {step}")
    if end - start <= seconds + _EPS:
        return [(start, end)]
    out: list[Span] = []
    i = 0
    while (t := start + i * step) + seconds <= end + _EPS:
        out.append((t, min(t + seconds, end)))
        i += 1
        if times is not None:  # the first window holding the next frame
            k = bisect.bisect_left(times, t + step - _EPS)
            if k < len(times):
                i = max(i, math.floor((times[k] - start - seconds) / step + _EPS) + 1)
            else:
                i = max(i, math.floor((end - start - seconds) / step + _EPS) + 1)
    last_start, last_end = out[-1]
    if last_end < end - _EPS:
        nxt = start + i * step
        if end - nxt >= seconds / 2 - _EPS or nxt > last_start + step + _EPS:
            out.append((nxt, end))
        else:
            out[-1] = (last_start, end)
    return out


def merge_short(cuts: Sequence[float], end: float, minimum: float) -> list[Span]:
    """Shots ``[cuts[i], cuts[i+1])`` (``cuts[0]`` = start, ``end`` closes the last), each shorter
    than ``minimum`` merged with a neighbour: the previous one, or the next for the first."""
    bounds = [*cuts, end]
    shots = [(a, b) for a, b in pairwise(bounds) if b > a]
    out: list[Span] = []
    for a, b in shots:
        if out and (b - a < minimum - _EPS or out[-1][1] - out[-1][0] < minimum - _EPS):
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def spans_for(setting: Segmenting, duration: float, cuts: Sequence[float] = (0.0,),
              times: Sequence[float] | None = None) -> list[Span]:
    """The segments of a file of ``duration`` seconds (``cuts``: shot starts, mode shots;
    ``times``: the frames' times, to pass over stretches without frames)."""
    if setting.whole_for(duration):
        return [(0.0, duration)]
    if setting.mode != "shots":
        return windows(0.0, duration, setting.seconds, setting.stride, times)
    return [w for a, b in merge_short(cuts, duration, setting.shot_min)
            for w in windows(a, b, setting.seconds, setting.stride, times)]


def format_time(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from one hour on (whole seconds, rounded down)."""
    s = max(int(seconds + _EPS), 0)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def format_span(start: float, end: float | None) -> str:
    """``mm:ss-mm:ss`` (``h:mm:ss`` past an hour); an unknown end shows as ``?``. A span of
    less than a second shows hundredths (``00:00.00-00:00.04``: a one-frame video)."""
    if end is not None and end - start < 1:
        return f"{_hundredths(start)}-{_hundredths(end)}"
    return f"{format_time(start)}-{format_time(end) if end is not None else '?'}"


def _hundredths(seconds: float) -> str:
    cs = int(max(seconds, 0) * 100 + 1e-4)  # rounded down, like format_time
    return f"{format_time(cs // 100)}.{cs % 100:02d}"

"""Deterministic synthetic captioned clips: moving shapes rendered with numpy, written as H.264 mp4.

Every clip is a function of ``(seed, index)`` only. A clip shows a primary object (shape, colour,
size, motion) on a plain background, sometimes with a second, still object; its caption is drawn
from paraphrase templates. The held-out split is made of attribute combinations that never occur
in training: the unit held out is (appearance, motion axis), so both directions of an axis
(left/right, up/down, growing/shrinking, rotating/still) are held out together and the held-out
gallery always contains clips that differ only in direction.

CLI: ``python -m pig.demo.synth --out demo_out/synth --train 16000 --heldout 600``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import click
import numpy as np

from pig import console
from pig.errors import PigError

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (145, 60, 195),
    "cyan": (40, 205, 215),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (125, 125, 125),
}
SIZES = {"small": 0.13, "large": 0.22}  # object radius as a fraction of the frame side
MOTION_AXES = (("left", "right"), ("up", "down"), ("growing", "shrinking"), ("rotating", "still"))
MOTIONS = tuple(m for axis in MOTION_AXES for m in axis)

# Paraphrases: every word list is disjoint from the others, so a caption names its attributes.
SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star", "five-pointed star"),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
MOTION_WORDS = {
    "left": ("moves to the left", "slides left", "travels leftward"),
    "right": ("moves to the right", "slides right", "travels rightward"),
    "up": ("moves up", "rises", "floats upward"),
    "down": ("moves down", "falls", "sinks downward"),
    "growing": ("grows", "gets bigger", "expands"),
    "shrinking": ("shrinks", "gets smaller", "contracts"),
    "rotating": ("rotates", "spins", "turns around"),
    "still": ("stays still", "does not move", "stays in place"),
}
TEMPLATES = (
    "a {size} {colour} {shape} {motion} on a {bg} background{extra}",
    "on {bg}, a {size} {colour} {shape} {motion}{extra}",
    "a {colour} {shape}, {size}, {motion} against a {bg} backdrop{extra}",
    "there is a {size} {colour} {shape} that {motion} over a {bg} background{extra}",
)
EXTRA_TEMPLATES = (
    ", next to a still {colour} {shape}",
    ", beside a {colour} {shape} that stays put",
)

HELDOUT_FRACTION = 0.2
TWO_OBJECT_FRACTION = 0.25


@dataclass(frozen=True)
class ClipSpec:
    """Attributes of one clip (``second_*`` are empty for single-object clips)."""

    shape: str
    colour: str
    size: str
    motion: str
    background: str
    second_shape: str = ""
    second_colour: str = ""

    def key(self) -> tuple[str, ...]:
        """The attribute combination: two clips with equal keys are interchangeable targets."""
        return tuple(asdict(self).values())

    def unit(self) -> tuple[str, str, str, str, int]:
        """The held-out unit: appearance plus motion axis (both directions together)."""
        axis = next(i for i, a in enumerate(MOTION_AXES) if self.motion in a)
        return (self.shape, self.colour, self.size, self.background, axis)


@dataclass(frozen=True)
class RenderSettings:
    """Geometry and encoding of the rendered clips."""

    size: int = 96
    num_frames: int = 16
    fps: int = 8
    crf: int = 18


def is_heldout(unit: tuple[str, str, str, str, int], seed: int) -> bool:
    """Deterministic, seed-dependent membership of a held-out unit (hash of its attributes)."""
    h = zlib.crc32(f"{seed}|{'|'.join(map(str, unit))}".encode())
    return (h % 1000) < HELDOUT_FRACTION * 1000


def opposite(motion: str) -> str:
    """The other motion of ``motion``'s axis (left <-> right, ..., rotating <-> still)."""
    axis = next(a for a in MOTION_AXES if motion in a)
    return axis[1 - axis.index(motion)]


def valid(shape: str, motion: str) -> bool:
    """Whether the combination is generated (a rotating circle is not: it looks still)."""
    return not (shape == "circle" and motion == "rotating")


def heldout_singles(seed: int) -> list[ClipSpec]:
    """Every held-out single-object combination, in a fixed order."""
    return [
        spec
        for shape in SHAPES
        for colour in COLOURS
        for size in SIZES
        for bg in BACKGROUNDS
        for motion in MOTIONS
        if valid(shape, motion)
        and is_heldout((spec := ClipSpec(shape, colour, size, motion, bg)).unit(), seed)
    ]


def sample_spec(rng: np.random.Generator, heldout: bool, seed: int, two: bool) -> ClipSpec:
    """Draw attributes until the combination is held out (``heldout``) or not."""
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        if not valid(shape, motion) or (two and motion == "still"):
            continue
        second_shape = second_colour = ""
        if two:
            second_shape = SHAPES[rng.integers(len(SHAPES))]
            second_colour = list(COLOURS)[rng.integers(len(COLOURS))]
            if (second_shape, second_colour) == (shape, colour):
                continue
        spec = ClipSpec(shape, colour, size, motion, bg, second_shape, second_colour)
        if is_heldout(spec.unit(), seed) == heldout:
            return spec


def caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """One paraphrase of the clip's attributes."""

    def pick(words: tuple[str, ...]) -> str:
        return words[rng.integers(len(words))]

    extra = ""
    if spec.second_shape:
        extra = pick(EXTRA_TEMPLATES).format(
            colour=spec.second_colour, shape=pick(SHAPE_WORDS[spec.second_shape])
        )
    return pick(TEMPLATES).format(
        size=pick(SIZE_WORDS[spec.size]),
        colour=spec.colour,
        shape=pick(SHAPE_WORDS[spec.shape]),
        motion=pick(MOTION_WORDS[spec.motion]),
        bg=spec.background,
        extra=extra,
    )


def captions(n: int, seed: int = 0) -> list[str]:
    """``n`` captions drawn as the demo draws its clips' (single and two-object, training and
    held-out combinations), without rendering: the caption corpus of the text benchmarks
    and tests (10-30 tokens with BOS/EOS, median 15)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        spec = sample_spec(rng, heldout=i % 5 == 0, seed=seed,
                           two=bool(rng.random() < TWO_OBJECT_FRACTION))
        out.append(caption(spec, rng))
    return out


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (unit radius, v pointing down)."""
    if shape == "circle":
        return u**2 + v**2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        return (v <= 0.7) & (v >= 2.0 * np.abs(u) - 1.0)
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av_ <= 0.95)) | ((av_ <= 0.3) & (au <= 0.95))
    if shape == "star":
        r = np.hypot(u, v)
        theta = np.arctan2(u, -v)  # one point straight up
        return r <= 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5.0 * theta)) ** 2
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class _Track:
    x: np.ndarray  # centre per frame, pixels
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


def _track(spec: ClipSpec, rng: np.random.Generator, s: RenderSettings) -> _Track:
    n, side = s.num_frames, float(s.size)
    t = np.linspace(0.0, 1.0, n)
    r0 = SIZES[spec.size] * side * rng.uniform(0.9, 1.1)
    margin = r0 + 2.0
    travel = rng.uniform(0.75, 1.0) * (side - 2 * margin)
    x0, y0 = rng.uniform(margin, side - margin, size=2)
    x, y = np.full(n, x0), np.full(n, y0)
    radius, angle = np.full(n, r0), np.zeros(n)
    start = rng.uniform(margin, side - margin - travel)
    if spec.motion in ("left", "right"):
        x = start + travel * (t if spec.motion == "right" else 1.0 - t)
    elif spec.motion in ("up", "down"):
        y = start + travel * (t if spec.motion == "down" else 1.0 - t)
    elif spec.motion in ("growing", "shrinking"):
        scale = 0.45 + 0.9 * (t if spec.motion == "growing" else 1.0 - t)
        radius = r0 * scale
        x, y = np.full(n, side / 2), np.full(n, side / 2)
    elif spec.motion == "rotating":
        angle = rng.choice((-1.0, 1.0)) * 0.55 * np.pi * t
    return _Track(x, y, radius, angle)


def _second_track(first: _Track, rng: np.random.Generator, s: RenderSettings) -> _Track:
    """A still, small second object placed away from the first object's path."""
    side, n = float(s.size), s.num_frames
    r = 0.1 * side
    for _ in range(100):
        cx, cy = rng.uniform(r + 2, side - r - 2, size=2)
        gap = np.hypot(first.x - cx, first.y - cy) - first.radius - r
        if gap.min() > 2.0:
            break
    return _Track(np.full(n, cx), np.full(n, cy), np.full(n, r), np.zeros(n))


def render(spec: ClipSpec, rng: np.random.Generator, s: RenderSettings) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] of one clip."""
    grid = np.arange(s.size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    objects = [(spec.shape, spec.colour, _track(spec, rng, s))]
    if spec.second_shape:
        second = _second_track(objects[0][2], rng, s)
        objects.append((spec.second_shape, spec.second_colour, second))
    frames = np.empty((s.num_frames, s.size, s.size, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[spec.background]
    for shape, colour, tr in objects:
        for f in range(s.num_frames):
            c, sn = np.cos(tr.angle[f]), np.sin(tr.angle[f])
            dx, dy = (xx - tr.x[f]) / tr.radius[f], (yy - tr.y[f]) / tr.radius[f]
            u, v = c * dx + sn * dy, -sn * dx + c * dy
            frames[f][shape_mask(shape, u, v)] = COLOURS[colour]
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    """Encode RGB frames as H.264 (yuv420p) mp4, single-threaded so the bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "threads": "1", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass(frozen=True)
class Clip:
    """One generated clip: its file (relative to the dataset root), caption and attributes."""

    path: str
    caption: str
    split: str
    spec: ClipSpec


def make_clip(seed: int, split: str, index: int) -> tuple[Clip, np.ndarray]:
    """Attributes, caption and frames of clip ``index`` of ``split``; a pure function of its args.

    Held-out clips first cover every held-out single-object combination once, then continue with
    two-object clips; training clips are drawn at random from the other combinations.
    """
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    if split == "heldout":
        singles = heldout_singles(seed)
        spec = singles[index] if index < len(singles) else sample_spec(rng, True, seed, True)
    else:
        spec = sample_spec(rng, False, seed, rng.random() < TWO_OBJECT_FRACTION)
    text = caption(spec, rng)
    frames = render(spec, rng, RenderSettings())
    return Clip(f"{split}/{split}_{index:05d}.mp4", text, split, spec), frames


MANIFEST = "clips.jsonl"


def generate(out: Path, num_train: int, num_heldout: int, seed: int = 0) -> list[Clip]:
    """Write all clips under ``out`` plus ``clips.jsonl`` (one JSON object per clip)."""
    s = RenderSettings()
    clips = []
    for split, count in (("train", num_train), ("heldout", num_heldout)):
        for i in range(count):
            clip, frames = make_clip(seed, split, i)
            write_mp4(out / clip.path, frames, s.fps, s.crf)
            clips.append(clip)
    with open(out / MANIFEST, "w") as f:
        for c in clips:
            f.write(json.dumps({**asdict(c), "spec": asdict(c.spec)}) + "\n")
    return clips


def load_manifest(root: Path, split: str | None = None) -> list[Clip]:
    """Read ``clips.jsonl`` under ``root``, optionally only one split."""
    if not (root / MANIFEST).is_file():
        raise PigError(f"{root}: no {MANIFEST} (not a pig.demo.synth folder)")
    clips = []
    with open(root / MANIFEST) as f:
        for line in f:
            d = json.loads(line)
            if split is None or d["split"] == split:
                clips.append(Clip(d["path"], d["caption"], d["split"], ClipSpec(**d["spec"])))
    return clips


@click.command(context_settings=console.CONTEXT, help=__doc__.splitlines()[0])
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out/synth"),
              show_default=True)
@click.option("--train", type=click.IntRange(0), default=16000, show_default=True)
@click.option("--heldout", type=click.IntRange(0), default=600, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def cli(out: Path, train: int, heldout: int, seed: int) -> None:
    clips = generate(out, train, heldout, seed)
    print(f"wrote {len(clips)} clips under {out}")


def main(argv: list[str] | None = None) -> None:
    """``python -m pig.demo.synth`` (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "python -m pig.demo.synth")


if __name__ == "__main__":
    main()

"""The steps of ``make demo`` that other tools reuse: the held-out clips, the shipped demo
model exported to a bundle, its index, and ranks through the engine's query path.

Each step is skipped when its output is up to date. :mod:`pig.demo.run` chains them;
:mod:`pig.demo.moments`, the benchmarks and tests call them one by one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pig.demo import synth
from pig.engine.bundle import Bundle, sha256_file
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.query.engine import QueryEngine
from pig.errors import PigError

MODEL = Path("models/pig-tiny")
CHECKPOINT, CONFIG = MODEL / "pig_tiny.pt", MODEL / "args.json"
OUT = Path("demo_out")
BUNDLE = Path("bundles/pig-tiny")
STAMP = "demo.json"


def say(msg: str) -> None:
    """A progress line of the demo, flushed at once."""
    print(msg, flush=True)


def ensure_clips(root: Path, n: int, seed: int = 0) -> list[synth.Clip]:
    """The first ``n`` held-out clips of ``seed`` under ``root`` (generated unless present)."""
    want = {"heldout": n, "seed": seed}
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        clips = synth.load_manifest(root, "heldout")
        if all((root / c.path).is_file() for c in clips):
            say(f"[1/5] {n} held-out clips in {root} (cached)")
            return clips
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    clips = synth.generate(root, 0, n, seed)
    stamp.write_text(json.dumps(want) + "\n")
    say(f"[1/5] generated {n} held-out clips in {root} ({time.perf_counter() - t0:.0f} s)")
    return clips


def model_files() -> tuple[Path, Path]:
    """(checkpoint, args.json) of the shipped demo model; a clear error when it is missing."""
    for f in (CHECKPOINT, CONFIG):
        if not f.is_file():
            raise PigError(f"{f}: not found (the demo model ships with the repository: "
                           f"restore it with git, or retrain it as {MODEL}/README.md says)")
    return CHECKPOINT, CONFIG


def ensure_bundle(checkpoint: Path, config: Path, out: Path) -> Bundle:
    """``out`` exported from ``checkpoint`` (reused while the checkpoint's sha256 matches)."""
    digest = sha256_file(checkpoint)
    if (out / "manifest.json").is_file():
        try:
            bundle = Bundle.load(out)
            if bundle.manifest["source_checkpoint"]["sha256"] == digest:
                say(f"[2/5] bundle {out} (cached, from {checkpoint})")
                return bundle
        except (PigError, KeyError):
            pass
    t0 = time.perf_counter()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [sys.executable, "-m", "pig.cli.export", "--onnx", "--checkpoint", str(checkpoint),
           "--config", str(config), "--out", str(partial)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PigError(f"pig-export failed for {checkpoint}:\n{done.stdout}{done.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    say(f"[2/5] exported {checkpoint} -> {out} ({time.perf_counter() - t0:.0f} s)")
    return Bundle.load(out)


def ensure_index(clips_root: Path, clips: list[synth.Clip], bundle: Bundle,
                 index_dir: Path) -> None:
    """Index the clips; an index of another bundle or with other files is rebuilt."""
    if (index_dir / "manifest.json").is_file():
        wanted = {str((clips_root / c.path).absolute()) for c in clips}
        with VideoIndex.open(index_dir, view=True) as idx:
            stale = idx.fingerprint != bundle.fingerprint or not {
                r.path for r in idx.records()} <= wanted
        if stale:
            shutil.rmtree(index_dir)
    report = index_videos([clips_root / "heldout"], bundle, index_dir,
                          progress=sys.stderr.isatty(), log=lambda _: None)
    say(f"[3/5] index {index_dir}: " + report.summary().replace("\n", "\n      "))
    if report.failed:
        raise PigError(f"{index_dir}: {len(report.failed)} demo clips failed to index")


Top = list[list[tuple[float, synth.Clip]]]


def engine_ranks(searcher: QueryEngine, clips: list[synth.Clip], root: Path, k: int,
                 exact: bool | None = None) -> tuple[np.ndarray, Top]:
    """Per caption, through ``QueryEngine.search``: the rank of the best correct clip by the
    evaluation's rule (1 + wrong clips scoring >= it, so ties count against; ``k + 1`` when no
    correct clip is in the top ``k``) and the top-``k`` (score, clip) list."""
    by_path = {str((root / c.path).absolute()): c for c in clips}
    results = searcher.search([c.caption for c in clips], k, exact=exact)
    ranks, tops = [], []
    for query, hits in zip(clips, results, strict=True):
        top = [(h.score, by_path[h.path]) for h in hits]
        correct = [c.spec.key() == query.spec.key() for _, c in top]
        best = max((s for (s, _), ok in zip(top, correct, strict=True) if ok), default=None)
        ranks.append(k + 1 if best is None else 1 + sum(
            s >= best and not ok for (s, _), ok in zip(top, correct, strict=True)))
        tops.append(top)
    return np.asarray(ranks), tops

"""``make demo``: held-out synthetic clips -> demo bundle -> ``pig-engine`` index -> searches.

Steps, each skipped when its output is up to date:

1. generate the held-out clips (``pig.demo.synth``, seed 0) under ``demo_out/heldout``;
2. export the shipped tiny PIG (``models/pig-tiny``) with ``pig-export --onnx`` into
   ``bundles/pig-tiny`` (re-exported when the checkpoint's sha256 changes);
3. index the clips with the engine's pipeline into ``demo_out/index`` (incremental);
4. search with every held-out caption through the engine's query path, print R@1/5/10 and a
   few queries with their top results beside the true captions;
5. concatenate the clips into long videos, index them with segments and report moment search
   (``pig.demo.moments``), with one moment search and its timestamps.

A clip counts as correct when its attributes equal the query clip's (``pig.demo.evaluate``).
``python -m pig.demo.run [--heldout N] [--shown K]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from pig.cli import console
from pig.demo import moments, synth
from pig.demo.evaluate import RULE
from pig.engine.bundle import Bundle, sha256_file
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.query.engine import QueryEngine
from pig.engine.query.request import Example, Request, Term
from pig.errors import PigError

MODEL = Path("models/pig-tiny")
CHECKPOINT, CONFIG = MODEL / "pig_tiny.pt", MODEL / "args.json"
OUT = Path("demo_out")
BUNDLE = Path("bundles/pig-tiny")
STAMP = "demo.json"


def _say(msg: str) -> None:
    print(msg, flush=True)


def ensure_clips(root: Path, n: int, seed: int = 0) -> list[synth.Clip]:
    """The first ``n`` held-out clips of ``seed`` under ``root`` (generated unless present)."""
    want = {"heldout": n, "seed": seed}
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        clips = synth.load_manifest(root, "heldout")
        if all((root / c.path).is_file() for c in clips):
            _say(f"[1/5] {n} held-out clips in {root} (cached)")
            return clips
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    clips = synth.generate(root, 0, n, seed)
    stamp.write_text(json.dumps(want) + "\n")
    _say(f"[1/5] generated {n} held-out clips in {root} ({time.perf_counter() - t0:.0f} s)")
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
                _say(f"[2/5] bundle {out} (cached, from {checkpoint})")
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
    _say(f"[2/5] exported {checkpoint} -> {out} ({time.perf_counter() - t0:.0f} s)")
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
    _say(f"[3/5] index {index_dir}: " + report.summary().replace("\n", "\n      "))
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


def example_agreement(engine: QueryEngine, clips: list[synth.Clip], root: Path,
                      k: int = 10) -> dict[str, tuple[float, float]]:
    """Query by example (``--like @ID``) with every clip: per attribute of the captions
    (shape, colour, ...; ``all``: every one, the same caption), the share of its ``k``
    nearest other clips that have the query clip's, and that share by chance."""
    by_path = {str((root / c.path).absolute()): c for c in clips}
    index = engine.indexes[0]
    ids = [index.lookup(root / c.path).key for c in clips]  # type: ignore[union-attr]
    answers = engine.run([Request((Term(like=Example(id=i)),), k=k + 1) for i in ids])
    names = [f.name for f in dataclasses.fields(synth.ClipSpec)][:5]
    facts: dict[str, Callable[[synth.Clip], object]] = {
        **{n: (lambda c, n=n: getattr(c.spec, n)) for n in names},
        "all": lambda c: c.spec.key()}
    out = {}
    for name, fact in facts.items():
        values = [fact(c) for c in clips]
        shares = []
        for clip, key, answer in zip(clips, ids, answers, strict=True):
            near = [by_path[h.path] for h in answer.hits if h.key != key][:k]
            shares.append(np.mean([fact(c) == fact(clip) for c in near]))
        chance = np.mean([(values.count(v) - 1) / (len(values) - 1) for v in values])
        out[name] = (float(np.mean(shares)), float(chance))
    return out


def show(clips: list[synth.Clip], tops: Top, shown: int,
         per_query: int = 3) -> None:
    for i in np.linspace(0, len(clips) - 1, shown).astype(int):
        q = clips[i]
        _say(f'\nquery: "{q.caption}"   (true clip: {Path(q.path).name})')
        for rank, (score, c) in enumerate(tops[i][:per_query], 1):
            mark = "yes" if c.spec.key() == q.spec.key() else "no "
            _say(f"  {rank}. {score:6.3f}  correct={mark}  {Path(c.path).name}  \"{c.caption}\"")


@click.command(context_settings=console.CONTEXT, help=__doc__.splitlines()[0])
@click.option("--heldout", type=click.IntRange(1), default=600, show_default=True,
              help="held-out clips to index")
@click.option("--shown", type=click.IntRange(0), default=6, show_default=True,
              help="queries printed with their results")
def cli(heldout: int, shown: int) -> None:
    t0 = time.perf_counter()
    clips = ensure_clips(OUT / "heldout", heldout)
    checkpoint, config = model_files()
    bundle = ensure_bundle(checkpoint, config, BUNDLE)
    ensure_index(OUT / "heldout", clips, bundle, OUT / "index")
    with QueryEngine(OUT / "index", log=lambda _: None) as searcher:
        ranks, tops = engine_ranks(searcher, clips, OUT / "heldout", k=10)
        agreement = example_agreement(searcher, clips, OUT / "heldout")
    r = {f"R@{k}": 100 * float(np.mean(ranks <= k)) for k in (1, 5, 10)}
    _say(f"[4/5] {len(clips)} captions searched with pig-engine (k=10): "
         + ", ".join(f"{name} {v:.1f}%" for name, v in r.items())
         + f" (chance R@1 ~{100 / len(clips):.1f}%); {RULE}")
    _say("      query by example (--like @ID, each clip), share of its 10 nearest other "
         "clips with its ...: " + ", ".join(f"{name} {100 * share:.0f}% (chance "
                                            f"{100 * chance:.0f}%)"
                                            for name, (share, chance) in agreement.items()))
    report = MODEL / "eval_report.json"
    if report.is_file() and heldout == json.loads(report.read_text()).get(
            "heldout_clips"):
        ref = json.loads(report.read_text())["metrics"].get("PIG (ONNX Runtime fp32)", {})
        _say(f"      the evaluation ({report}, float32 vectors, exact) reports R@1 "
             f"{ref.get('R@1', float('nan')):.1f}%; this index stores float16 vectors, so "
             "near-ties may break differently")
    show(clips, tops, shown)
    _say("\n[5/5] moments: long videos of 16 held-out clips each, indexed with segments")
    results = moments.evaluate(OUT / "heldout", clips, bundle, OUT, say=_say)
    _say(moments.format_results(results, r["R@1"]))
    _say(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. " + try_it_yourself(
        OUT / "index", OUT / "index-aligned"))


def console_script(name: str) -> str:
    """How to run the console script ``name`` of this interpreter's environment from a fresh
    shell (its path; relative when it is under the working directory, e.g. .venv/bin/...)."""
    path = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    return shlex.quote(str(path) if "/" in str(path) else f"./{path}")


def try_it_yourself(index: Path, moments_index: Path,
                    query: str = "a large green star moves up on a black background") -> str:
    """The demo's closing lines: commands that work pasted into a fresh shell."""
    exe, q = console_script("pig-engine"), shlex.quote(query)
    return (f"Try it yourself (or run `source {console_script('activate')}` first, then just "
            "pig-engine ...):\n"
            f"  {exe} search --index {shlex.quote(str(index))} -k 5 --query {q}\n"
            f"  {exe} search --index {shlex.quote(str(moments_index))} -k 5 --group-by segment "
            f"--query {q}")


def main(argv: list[str] | None = None) -> None:
    """``make demo`` (errors: :mod:`pig.cli.console`)."""
    console.run(cli, argv, "python -m pig.demo.run")


if __name__ == "__main__":
    main()

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
import operator
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from pig import console
from pig.demo import moments, synth
from pig.demo.evaluate import RULE
from pig.demo.steps import (
    BUNDLE,
    MODEL,
    OUT,
    Top,
    engine_ranks,
    ensure_bundle,
    ensure_clips,
    ensure_index,
    model_files,
    say,
)
from pig.engine.query.engine import QueryEngine
from pig.engine.query.request import Example, Request, Term


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
        **{n: operator.attrgetter(f"spec.{n}") for n in names},
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
        say(f'\nquery: "{q.caption}"   (true clip: {Path(q.path).name})')
        for rank, (score, c) in enumerate(tops[i][:per_query], 1):
            mark = "yes" if c.spec.key() == q.spec.key() else "no "
            say(f"  {rank}. {score:6.3f}  correct={mark}  {Path(c.path).name}  \"{c.caption}\"")


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
    say(f"[4/5] {len(clips)} captions searched with pig-engine (k=10): "
         + ", ".join(f"{name} {v:.1f}%" for name, v in r.items())
         + f" (chance R@1 ~{100 / len(clips):.1f}%); {RULE}")
    say("      query by example (--like @ID, each clip), share of its 10 nearest other "
         "clips with its ...: " + ", ".join(f"{name} {100 * share:.0f}% (chance "
                                            f"{100 * chance:.0f}%)"
                                            for name, (share, chance) in agreement.items()))
    report = MODEL / "eval_report.json"
    if report.is_file() and heldout == json.loads(report.read_text()).get(
            "heldout_clips"):
        ref = json.loads(report.read_text())["metrics"].get("PIG (ONNX Runtime fp32)", {})
        say(f"      the evaluation ({report}, float32 vectors, exact) reports R@1 "
             f"{ref.get('R@1', float('nan')):.1f}%; this index stores float16 vectors, so "
             "near-ties may break differently")
    show(clips, tops, shown)
    say("\n[5/5] moments: long videos of 16 held-out clips each, indexed with segments")
    results = moments.evaluate(OUT / "heldout", clips, bundle, OUT, say=say)
    say(moments.format_results(results, r["R@1"]))
    say(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. " + try_it_yourself(
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
    """``make demo`` (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "python -m pig.demo.run")


if __name__ == "__main__":
    main()

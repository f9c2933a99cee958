"""The documentation's figures (``docs/figures/*.png``), drawn from the points the benchmarks
recorded (:mod:`bench.results`); ``make bench`` runs this after the benchmarks.

- ``search_recall_latency.png``: recall@10 against p50 latency as the HNSW expansion grows,
  one curve per index size, the default rule marked (``bench_search``);
- ``indexing_throughput.png``: end-to-end indexing throughput against its two ceilings,
  encoder only and decode + preprocess only, per bundle, clip set and thread setting
  (``bench_pipeline``);
- ``indexing_stages.png``: at the default setting, the rate of each stage alone and of the
  whole run (``bench_pipeline``).

A figure whose points are missing is left as it is. ``python -m bench.figures``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import results

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "savefig.bbox": "tight"})
    return plt


def _save(fig: Any, name: str) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, metadata={"Software": None})  # no version stamp: stable bytes
    return path


def search_curve(data: dict[str, Any]) -> Path:
    """Points: ``{"n", "ef", "auto", "recall", "p50_ms"}`` per (size, expansion)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for n in sorted({p["n"] for p in data["points"]}):
        pts = sorted((p for p in data["points"] if p["n"] == n), key=lambda p: p["ef"])
        line = ax.plot([p["p50_ms"] for p in pts], [p["recall"] for p in pts], marker="o",
                       markersize=3, label=f"{n:,} vectors")[0]
        for p in pts:
            auto = p["auto"]
            ax.annotate(f"ef {p['ef']}" + (" (default)" if auto else ""),
                        (p["p50_ms"], p["recall"]), fontsize=7, textcoords="offset points",
                        xytext=(-40, 7) if auto else (4, -9))
            if p["auto"]:
                ax.plot(p["p50_ms"], p["recall"], marker="*", markersize=11,
                        color=line.get_color())
    ax.set_xscale("log")
    ticks = plt.matplotlib.ticker.FormatStrFormatter("%g")
    ax.xaxis.set_major_formatter(ticks)
    ax.xaxis.set_minor_formatter(ticks)
    ax.set_xlabel("p50 latency per query, ms (log)")
    ax.set_ylabel("recall@10 against exact search")
    ax.set_title(f"HNSW search: recall against latency as ef grows (* default; "
                 f"{data['cpus']} CPUs)")
    ax.legend(loc="lower right")
    return _save(fig, "search_recall_latency.png")


def _label(p: dict[str, Any]) -> str:
    return f"{p['bundle']}, {p['clips']}\n{p['workers']} workers, ORT {p['ort_threads']}"


def indexing_throughput(data: dict[str, Any]) -> Path:
    """Points: ``{"bundle", "clips", "workers", "ort_threads", "e2e", "enc", "dec"}`` (v/s)."""
    plt = _pyplot()
    pts = data["points"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pts) + 1.2))
    y = range(len(pts))
    ax.barh([i + 0.27 for i in y], [p["enc"] for p in pts], 0.27, label="encoder only (ceiling)",
            color="#bbbbbb")
    ax.barh([i for i in y], [p["dec"] for p in pts], 0.27, label="decode + preprocess only",
            color="#9ecae1")
    ax.barh([i - 0.27 for i in y], [p["e2e"] for p in pts], 0.27, label="pig-engine index",
            color="#3182bd")
    ax.set_yticks(list(y), [_label(p) for p in pts], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("videos per second")
    ax.set_title(f"Indexing throughput against its ceilings ({data['cpus']} CPUs)")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, "indexing_throughput.png")


def indexing_stages(data: dict[str, Any]) -> Path:
    """The default-setting points of :func:`indexing_throughput`, one group per run."""
    plt = _pyplot()
    pts = [p for p in data["points"] if p.get("default")] or data["points"]
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(pts) + 1.4))
    stages = (("dec", "decode + preprocess"), ("enc", "encode"), ("e2e", "whole run"))
    height = 0.8 / len(stages)
    for j, (key, name) in enumerate(stages):
        ax.barh([i + (j - 1) * height for i in range(len(pts))], [p[key] for p in pts], height,
                label=name)
    ax.set_yticks(range(len(pts)), [f"{p['bundle']}, {p['clips']}" for p in pts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("videos per second (each stage alone, and the whole run)")
    ax.set_title("Indexing stages at the default setting: the slowest one bounds the run")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, "indexing_stages.png")


DRAW = {"search_curve": (search_curve,), "indexing": (indexing_throughput, indexing_stages)}


def main() -> None:
    data = results.load()
    for name, draws in DRAW.items():
        if name not in data or not data[name]["points"]:
            print(f"figures: no {name} points (run its benchmark): its figures are kept")
            continue
        for draw in draws:
            path = draw(data[name])
            print(f"figures: wrote {path.relative_to(FIGURES.parents[1])} "
                  f"({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()

"""``pig-engine``: index videos, search them by text, inspect and edit an index.

Exit codes: 0 success; 1 some videos failed to index (or a path to remove matched nothing);
2 a user error (one line on stderr naming the file and the problem); 130 interrupted.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click

from pig.engine.backends.base import PRECISIONS
from pig.engine.backends.select import BACKENDS
from pig.engine.decoders import CHOICES as DECODER_CHOICES
from pig.engine.index import DTYPES, VideoIndex
from pig.errors import PigError

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

_PATH = click.Path(path_type=Path)
_backend = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                        show_default=True, help="auto picks the fastest available")
_precision = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                          help="graph precision (default: fastest for the device)")
_index = click.option("--index", "index_dir", type=_PATH, required=True,
                      help="index directory")


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """PIG text-to-video retrieval: index videos, then search them with text."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=_PATH)
@click.option("--bundle", type=_PATH, required=True, help="bundle directory (pig-export --onnx)")
@_index
@click.option("--glob", default=None, help="file pattern inside folders (default: known video "
              "extensions), e.g. '*.mp4' or 'cam1/**'")
@_backend
@_precision
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
              help="decode + preprocess threads")
@click.option("--encoder-threads", type=click.IntRange(0), default=0, show_default=True,
              help="ONNX Runtime intra-op threads (0: one per core)")
@click.option("--decoder", type=click.Choice(DECODER_CHOICES), default="auto", show_default=True,
              help="video decoder: auto takes NVDEC on a GPU host with PyNvVideoCodec, else "
                   "PyAV; NVDEC files it cannot take fall back to PyAV one by one")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="vector storage of a new index (default f16)")
@click.option("--connectivity", type=click.IntRange(2), default=None, help="HNSW M")
@click.option("--expansion-add", type=click.IntRange(1), default=None, help="HNSW efConstruction")
@click.option("--expansion-search", type=click.IntRange(1), default=None, help="HNSW ef")
@click.option("--commit-every", type=click.FloatRange(0), default=10.0, show_default=True,
              help="seconds between commits (a crash loses at most this much work)")
@click.option("--retry-failed", is_flag=True, help="decode unchanged files that failed before")
@click.option("--progress/--no-progress", default=None,
              help="progress bar (default: when stderr is a terminal)")
def index(paths: tuple[Path, ...], bundle: Path, index_dir: Path, glob: str | None,
          backend: str, precision: str | None, batch_size: int, workers: int,
          encoder_threads: int, decoder: str, dtype: str | None, connectivity: int | None,
          expansion_add: int | None, expansion_search: int | None, commit_every: float,
          retry_failed: bool, progress: bool | None) -> int:
    """Embed the videos in PATHS (files and folders) into an index.

    Incremental and resumable: unchanged files are skipped, changed ones re-embedded. Videos
    that cannot be decoded are recorded with the reason, listed, and give exit code 1; so do
    folders that cannot be read (skipped; what an earlier run indexed there is kept).
    """
    from pig.engine.bundle import Bundle
    from pig.engine.pipeline import PipelineOptions, index_videos

    options = PipelineOptions(batch_size=batch_size, workers=workers,
                              encoder_threads=encoder_threads, commit_seconds=commit_every,
                              retry_failed=retry_failed, decoder=decoder)
    report = index_videos(
        paths, Bundle.load(bundle), index_dir, glob=glob, backend=backend, precision=precision,
        dtype=dtype, options=options, log=_log,
        usearch_settings={"connectivity": connectivity, "expansion_add": expansion_add,
                          "expansion_search": expansion_search},
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    click.echo(report.summary())
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed or report.unreadable else 0


def _read_queries(queries: tuple[str, ...], queries_file: Path | None) -> list[str]:
    out = list(queries)
    if queries_file is not None:
        try:
            text = queries_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise PigError(f"{queries_file}: cannot read queries ({err})") from None
        out += [line.strip() for line in text.splitlines() if line.strip()]
    if not out:
        raise PigError("no query: give --query TEXT or --queries-file FILE")
    return out


@cli.command()
@click.option("--query", "-q", "queries", multiple=True, help="query text (repeatable)")
@click.option("--queries-file", type=_PATH, default=None, help="one query per line")
@_index
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per query")
@click.option("--exact/--approximate", default=None,
              help="brute-force scan, or HNSW (default: scan up to 10k vectors, HNSW above)")
@click.option("--bundle", type=_PATH, default=None,
              help="bundle directory (default: the one recorded in the index)")
@_backend
@_precision
def search(queries: tuple[str, ...], queries_file: Path | None, index_dir: Path, k: int,
           as_json: bool, exact: bool | None, bundle: Path | None, backend: str,
           precision: str | None) -> int:
    """Find the videos that best match each query text."""
    from pig.engine.search import Searcher

    texts = _read_queries(queries, queries_file)
    with Searcher(index_dir, bundle, backend, precision, log=_log) as searcher:
        results = searcher.search(texts, k, exact=exact)
    for text, hits in zip(texts, results, strict=True):
        rows = [{"rank": r, "score": h.score, "path": h.path} for r, h in enumerate(hits, 1)]
        if as_json:
            click.echo(json.dumps({"query": text, "results": rows}))
            continue
        click.echo(f"query: {text}")
        for row in rows:
            click.echo(f"{row['rank']:>4}  {row['score']:.4f}  {row['path']}")
        if not rows:
            click.echo("   (index is empty)")
    return 0


def _info(idx: VideoIndex) -> dict[str, Any]:
    m = idx.manifest
    return {
        "index": str(idx.path), "fingerprint": m.fingerprint, "dim": m.dim, "dtype": m.dtype,
        "metric": m.metric, "usearch": m.usearch, "counts": idx.counts(),
        "generation": idx.generation, "producers": m.bundle_producers,
        "updated": datetime.datetime.fromtimestamp(m.updated, datetime.UTC).isoformat(
            timespec="seconds"),
        "failed": [{"path": r.path, "error": r.error} for r in idx.failed()],
    }


@cli.command()
@_index
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def info(index_dir: Path, as_json: bool) -> int:
    """Counts, settings, producing bundle and failed files of an index."""
    with VideoIndex.open(index_dir, view=True) as idx:
        d = _info(idx)
    if as_json:
        click.echo(json.dumps(d))
        return 0
    c = d["counts"]
    click.echo(f"index       {d['index']} (generation {d['generation']}, updated {d['updated']})")
    click.echo(f"model       {d['fingerprint']}")
    click.echo(f"vectors     {c['vectors']} x {d['dim']} {d['dtype']}, metric {d['metric']}, "
               + ", ".join(f"{k} {v}" for k, v in sorted(d["usearch"].items()) if k != "metric"))
    click.echo(f"files       {c['indexed']} indexed, {c['failed']} failed")
    for p in d["producers"]:
        click.echo("producer    " + ", ".join(f"{k}={v}" for k, v in sorted(p.items())))
    for f in d["failed"]:
        click.echo(f"failed      {f['path']}: {f['error']}")
    return 0


@cli.command()
@_index
@click.argument("paths", nargs=-1, required=True, type=_PATH)
def remove(index_dir: Path, paths: tuple[Path, ...]) -> int:
    """Remove files (or every file under a folder) from the index."""
    code = 0
    with VideoIndex.open(index_dir, writable=True) as idx:
        for p in paths:
            removed = idx.remove([p])
            if not removed:
                click.echo(f"{p.absolute()}: not in the index", err=True)
                code = EXIT_FAILED
            for r in removed:
                click.echo(f"removed {r}")
    return code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="pig-engine", standalone_mode=False)
    except PigError as err:
        click.echo(f"pig-engine: error: {err}", err=True)
        code = err.exit_code
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo("pig-engine: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)


if __name__ == "__main__":
    main()

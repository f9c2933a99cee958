"""``pig-engine``: index videos, search them by text, inspect and edit an index.

Exit codes: 0 success; 1 some videos failed to index (or a path to remove matched nothing);
2 a user error (one line on stderr naming the file and the problem); 130 interrupted (Ctrl-C),
143 terminated (SIGTERM; ``index`` commits what it encoded first).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from pig.cli import console
from pig.engine.backends.select import BACKENDS
from pig.engine.display import Detail, display_path
from pig.engine.graphs import PRECISIONS
from pig.engine.index import DTYPES, VideoIndex
from pig.engine.index.store import GROUP_BY
from pig.engine.limits import MAX_K
from pig.engine.media.decoders import CHOICES as DECODER_CHOICES
from pig.engine.media.segments import MODES, Segmenting, format_span, format_time
from pig.errors import PigError

EXIT_FAILED = 1
EXIT_INTERRUPTED = console.EXIT_INTERRUPTED

_PATH = click.Path(path_type=Path)
_backend = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                        show_default=True, help="auto picks the fastest available")
_precision = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                          help="graph precision (default: fastest for the device)")
_index = click.option("--index", "index_dir", type=_PATH, required=True,
                      help="index directory")


_VERBOSE = False  # -v/--verbose: the reasons behind each choice (Detail lines) too


def _log(msg: str) -> None:
    if _VERBOSE or not isinstance(msg, Detail):
        click.echo(display_path(msg), err=True)


def _set_verbose(_: click.Context, __: click.Parameter, value: bool) -> bool:
    global _VERBOSE
    _VERBOSE = value
    return value


_verbose = click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_verbose,
                        help="also say why each backend, precision and decoder was chosen")


@click.group(context_settings=console.CONTEXT)
def cli() -> None:
    """PIG text-to-video retrieval: index videos, then search them with text."""


_INDEXING: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.argument("paths", nargs=-1, required=True),  # local paths or URLs (s3://...)
    click.option("--bundle", type=_PATH, required=True,
                 help="bundle directory (pig-export --onnx)"),
    _index,
    click.option("--glob", default=None, help="file pattern inside folders (default: known video "
                 "extensions), e.g. '*.mp4' or 'cam1/**'"),
    _backend,
    _precision,
    click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True),
    click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
                 help="decode + preprocess threads"),
    click.option("--encoder-threads", type=click.IntRange(0), default=0, show_default=True,
                 help="ONNX Runtime intra-op threads (0: one per core)"),
    click.option("--decoder", type=click.Choice(DECODER_CHOICES), default="auto", show_default=True,
                 help="video decoder: auto takes NVDEC on a GPU host with PyNvVideoCodec, else "
                      "PyAV; NVDEC files it cannot take fall back to PyAV one by one"),
    click.option("--dtype", type=click.Choice(DTYPES), default=None,
                 help="vector storage of a new index (default f16)"),
    click.option("--connectivity", type=click.IntRange(2), default=None, help="HNSW M"),
    click.option("--expansion-add", type=click.IntRange(1), default=None,
                 help="HNSW efConstruction"),
    click.option("--expansion-search", type=click.IntRange(1), default=None, help="HNSW ef"),
    click.option("--commit-every", type=click.FloatRange(0), default=10.0, show_default=True,
                 help="seconds between commits (a crash loses at most this much work)"),
    click.option("--retry-failed", is_flag=True, help="decode unchanged files that failed before"),
    click.option("--segments", "segment_mode", type=click.Choice(MODES), default=None,
                 help="segmenting of a new index: auto (whole video up to --whole-video-max-"
                 "seconds, else windows), fixed windows, or shots (PySceneDetect) [default: auto, "
                 "or the index's]"),
    click.option("--segment-seconds", type=click.FloatRange(0), default=None,
                 help="window length (implies --segments fixed unless given; 0: one whole-video "
                 "segment per file) [default: 10]"),
    click.option("--segment-stride-seconds", type=click.FloatRange(0, min_open=True), default=None,
                 help="start a window every R seconds (< window: overlap) [default: the window]"),
    click.option("--whole-video-max-seconds", type=click.FloatRange(0), default=None,
                 help="auto: files up to this long are one whole-video segment [default: 30]"),
    click.option("--shot-min-seconds", type=click.FloatRange(0), default=None,
                 help="shots: shorter shots merge with a neighbour [default: 2]"),
    click.option("--progress/--no-progress", default=None,
                 help="progress bar (default: when stderr is a terminal)"),
    _verbose,
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True,
                 help="local: this process; ray: decode and encode on Ray Data"),
    click.option("--ray-address", default=None, help="[ray] join this Ray cluster (bundle and "
                 "videos on a filesystem shared by every node); default: start Ray here"),
    click.option("--decode-cpus", type=click.IntRange(1), default=None,
                 help="[ray] decode tasks at once (default: every free CPU)"),
    click.option("--encoders", type=click.IntRange(1), default=1, show_default=True,
                 help="[ray] encoder actors"),
    click.option("--encoder-gpus", type=click.FloatRange(0), default=None,
                 help="[ray] GPUs per encoder actor (default: 1 if the cluster has GPUs, else 0: "
                 "ONNX Runtime on CPU)"),
    click.option("--allow-mass-removal", is_flag=True,
                 help="sync: remove the files gone from a folder even when they are more than "
                 "half of its indexed files"),
]


def _indexing(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that indexes (index, sync, watch)."""
    for option in reversed(_INDEXING):
        command = option(command)
    return command


@cli.command()
@_indexing
@click.option("--sync", "sync_", is_flag=True,
              help="also remove files gone from PATHS and recognise moved ones (pig-engine sync)")
def index(sync_: bool, **kw: Any) -> int:
    """Embed the videos in PATHS (files and folders) into an index.

    Incremental and resumable: unchanged files are skipped, changed ones re-embedded. Videos
    that cannot be decoded are recorded with the reason, listed, and give exit code 1; so do
    folders that cannot be read (skipped; what an earlier run indexed there is kept).
    The segmenting options are fixed when the index is created; a later run that gives
    different ones is refused. With --engine ray, --workers does not apply (--decode-cpus
    does). Indexed files under PATHS that are gone from disk are counted; --sync (or
    `pig-engine sync`) removes them.
    """
    if kw["allow_mass_removal"] and not sync_:
        raise PigError("--allow-mass-removal applies to removals: give it with --sync (or use "
                       "pig-engine sync)")
    return _run_index(kw, sync=sync_)


@cli.command()
@_indexing
def sync(**kw: Any) -> int:
    """Make the index equal to PATHS: index new and changed files, recognise moved and
    renamed ones by content (their vectors are kept, nothing is encoded again), treat a
    touch or a copy with the same content as unchanged, and remove the files under PATHS
    that are gone. Refuses to remove more than half of a folder's indexed files (an
    unmounted disk?) unless --allow-mass-removal."""
    return _run_index(kw, sync=True)


@cli.command()
@_indexing
@click.option("--settle-seconds", type=click.FloatRange(0), default=5.0, show_default=True,
              help="index a new or changed file once its size and mtime stayed this long")
@click.option("--polling", is_flag=True, help="look at the folders every --poll-seconds "
              "instead of waiting for file-system events (network mounts: NFS, SMB, FUSE)")
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True)
def watch(settle_seconds: float, polling: bool, poll_seconds: float, **kw: Any) -> int:
    """Sync the folders PATHS into the index, then follow them: new files once they stop
    growing, changes, moves and deletions; commits every --commit-every seconds (a serve on
    the same index picks them up). Runs until SIGTERM or Ctrl-C, which commit and exit
    143 or 130."""
    from pig.engine.ingest.watch import WatchOptions, watch_folders

    args = _run_args(kw)
    del args["progress"]
    signum = watch_folders(
        args.pop("paths"), args.pop("bundle"), args.pop("index_dir"), say=click.echo,
        watch=WatchOptions(settle_seconds=settle_seconds, polling=polling,
                           poll_seconds=poll_seconds, max_removal=args.pop("max_removal")),
        **args)
    return 128 + signum


def _run_args(kw: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an indexing run (index_videos, watch) from the options of
    :data:`_INDEXING`."""
    from pig.engine.bundle import Bundle
    from pig.engine.ingest.local_runner import local_engine
    from pig.engine.ingest.options import PipelineOptions
    from pig.engine.ingest.sync import MAX_REMOVAL

    run_on = local_engine
    if kw["engine"] == "ray":
        from pig.engine.ingest.ray_runner import RayEngine, RayOptions

        run_on = RayEngine(RayOptions(address=kw["ray_address"], decode_cpus=kw["decode_cpus"],
                                      encoders=kw["encoders"], encoder_gpus=kw["encoder_gpus"]))
    options = PipelineOptions(batch_size=kw["batch_size"], workers=kw["workers"],
                              encoder_threads=kw["encoder_threads"],
                              commit_seconds=kw["commit_every"],
                              retry_failed=kw["retry_failed"], decoder=kw["decoder"])
    segmenting = _segmenting(kw["segment_mode"], kw["segment_seconds"],
                             kw["segment_stride_seconds"], kw["whole_video_max_seconds"],
                             kw["shot_min_seconds"])
    return dict(
        paths=kw["paths"], bundle=Bundle.load(kw["bundle"]), index_dir=kw["index_dir"],
        glob=kw["glob"], backend=kw["backend"], precision=kw["precision"], dtype=kw["dtype"],
        segmenting=segmenting, options=options, log=_log, engine=run_on,
        usearch_settings={k: kw[k] for k in ("connectivity", "expansion_add",
                                              "expansion_search")},
        progress=sys.stderr.isatty() if kw["progress"] is None else kw["progress"],
        max_removal=None if kw["allow_mass_removal"] else MAX_REMOVAL,
    )


def _run_index(kw: dict[str, Any], *, sync: bool) -> int:
    from pig.engine.ingest.run import index_videos

    report = index_videos(**_run_args(kw), sync=sync)
    click.echo(report.summary())
    if report.interrupted:
        return 128 + report.interrupted
    return EXIT_FAILED if report.failed or report.skipped_paths else 0


def _segmenting(mode: str | None, seconds: float | None, stride: float | None,
                whole_max: float | None, shot_min: float | None) -> Segmenting | None:
    """The setting the options ask for, or None when none is given (the index's own)."""
    if all(v is None for v in (mode, seconds, stride, whole_max, shot_min)):
        return None
    default = Segmenting()
    return Segmenting(
        mode=mode or ("fixed" if seconds is not None else "auto"),  # type: ignore[arg-type]
        seconds=default.seconds if seconds is None else seconds,
        stride=stride,
        whole_max=default.whole_max if whole_max is None else whole_max,
        shot_min=default.shot_min if shot_min is None else shot_min,
    )


def _read_queries(queries: tuple[str, ...], queries_file: Path | None) -> list[str]:
    """The queries, checked before the encoder is opened (which can take long)."""
    from pig.engine.query.search import check_queries, read_queries_file

    out = list(queries)
    if queries_file is not None:
        out += read_queries_file(queries_file)
    if not out:
        raise PigError("no query: give --query TEXT or --queries-file FILE")
    check_queries(out)
    return out


_indexes = click.option("--index", "index_dirs", type=_PATH, required=True, multiple=True,
                        help="index directory (repeat to search several of one bundle as one)")


@cli.command()
@click.option("--query", "-q", "queries", multiple=True, help="query text (repeatable)")
@click.option("--queries-file", type=_PATH, default=None,
              help="one query per line ('-': standard input)")
@_indexes
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True,
              help="hits per query (files with --group-by video)")
@click.option("--group-by", type=click.Choice(GROUP_BY), default="video", show_default=True,
              help="video: one hit per file, its best segment; segment: raw segment hits")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per query")
@_verbose
@click.option("--exact/--approximate", default=None,
              help="brute-force scan, or HNSW (default: scan up to 10k vectors, HNSW above)")
@click.option("--bundle", type=_PATH, default=None,
              help="bundle directory (default: the one recorded in the index)")
@_backend
@_precision
def search(queries: tuple[str, ...], queries_file: Path | None, index_dirs: tuple[Path, ...],
           k: int, group_by: str, as_json: bool, exact: bool | None, bundle: Path | None,
           backend: str,
           precision: str | None) -> int:
    """Find the videos (and the moments in them) that best match each query text.

    With several --index, a hit's line shows [N] before its path: the position of its index
    (from 0), the ``index`` field of --json."""
    from pig.engine.query.search import Searcher, hit_json

    texts = _read_queries(queries, queries_file)
    with Searcher(index_dirs, bundle, backend, precision, log=_log) as searcher:
        results = searcher.search(texts, k, exact=exact, group_by=group_by)
        cut = searcher.truncated(texts)
        length = searcher.bundle.tokenizer_spec.max_length
    for i, (text, hits, truncated) in enumerate(zip(texts, results, cut, strict=True), 1):
        if truncated:
            _log(f"note: query {i} is longer than the model's text length ({length} tokens "
                 "with BOS/EOS): only its beginning was searched")
        rows = [hit_json(r, h) for r, h in enumerate(hits, 1)]
        if as_json:
            click.echo(json.dumps({"query": text, "truncated": truncated, "results": rows}))
            continue
        click.echo(f"query: {display_path(text)}")
        for row in rows:
            span = format_span(row["start_s"], row["end_s"])
            shard = f"[{row['index']}] " if len(index_dirs) > 1 else ""
            click.echo(f"{row['rank']:>4}  {row['score']:.4f}  {span:>13}  {shard}"
                       f"{display_path(row['path'])}")
        if not rows:
            click.echo("   (the indexes are empty)" if len(index_dirs) > 1
                       else "   (index is empty)")
    return 0


@cli.command()
@_indexes
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (non-loopback needs --api-key-file)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="0: any free port (the ready line names it)")
@click.option("--bundle", type=_PATH, default=None,
              help="bundle directory (default: the one recorded in the index)")
@_backend
@_precision
@click.option("--api-key-file", type=_PATH, default=None,
              help="file holding the key every data route requires (Authorization: Bearer)")
@click.option("--insecure-no-auth", is_flag=True,
              help="allow a non-loopback --host without --api-key-file")
@click.option("--max-batch", type=click.IntRange(1), default=64, show_default=True,
              help="queries per encoder call")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=0.0, show_default=True,
              help="how long a batch waits for more queries (0: takes what queued meanwhile)")
@click.option("--max-queue", type=click.IntRange(1), default=512, show_default=True,
              help="requests waiting for the encoder; more get 503 + Retry-After")
@click.option("--model-name", default=None,
              help="the model's name in GET /v1/models and embeddings answers (default: the "
                   "bundle folder's name; the bundle fingerprint is always accepted too)")
@click.option("--access-log", is_flag=True, help="one line per request on stdout")
@click.option("--ssl-certfile", type=_PATH, default=None,
              help="serve HTTPS with this certificate chain (PEM; with --ssl-keyfile)")
@click.option("--ssl-keyfile", type=_PATH, default=None,
              help="the private key of --ssl-certfile (PEM)")
@click.option("--root-path", default="",
              help="the path prefix a reverse proxy serves this under, e.g. /pig")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="a browser origin allowed to call the API, e.g. https://app.example.com "
                   "(repeatable; '*': any; default: none)")
@click.option("--media-redirect", is_flag=True, help="media of videos indexed from s3://, "
              "gs:// or https://: redirect to a presigned URL instead of proxying the bytes")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="a host name clients use for this server, besides IP addresses and "
              "localhost (repeatable; '*': any, behind a proxy that checks names)")
@click.option("--max-connections", type=click.IntRange(1), default=1000, show_default=True,
              help="open connections; past it a new one replaces the oldest still waiting "
              "for its request, or gets 503 at once when all are busy")
@click.option("--client-timeout", type=click.FloatRange(0.1, 3600), default=15.0,
              show_default=True, help="seconds a client may take to send a request's head, "
              "its body, or to read on while its answer waits (each)")
@_verbose
def serve(index_dirs: tuple[Path, ...], host: str, port: int, bundle: Path | None, backend: str,
          precision: str | None, api_key_file: Path | None, insecure_no_auth: bool,
          max_batch: int, max_wait_ms: float, max_queue: int, model_name: str | None,
          access_log: bool, ssl_certfile: Path | None, ssl_keyfile: Path | None,
          root_path: str, cors_origins: tuple[str, ...], media_redirect: bool,
          allowed_hosts: tuple[str, ...], max_connections: int, client_timeout: float) -> int:
    """HTTP search service on one index or several of one bundle searched as one (needs the
    serve extra); see docs/http-api.md."""
    from pig.engine.serve import missing_extra

    if why := missing_extra():
        raise PigError(why)
    from pig.engine.serve.connections import ConnectionLimits
    from pig.engine.serve.server import HttpOptions, serve_index
    from pig.engine.serve.service import ServeOptions

    if model_name is not None and not (model_name.strip() == model_name and model_name
                                       and model_name.isprintable() and len(model_name) <= 256):
        raise PigError(f"--model-name {model_name!r}: give a printable name without "
                       "surrounding spaces (at most 256 characters)")
    serve_index(index_dirs, host=host, port=port, bundle_dir=bundle, backend=backend,
                precision=precision, api_key_file=api_key_file,
                insecure_no_auth=insecure_no_auth, say=click.echo, log=_log,
                options=ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms,
                                     max_queue=max_queue, model_name=model_name,
                                     media_redirect=media_redirect),
                http=HttpOptions(access_log=access_log, ssl_certfile=ssl_certfile,
                                 ssl_keyfile=ssl_keyfile, root_path=root_path.rstrip("/"),
                                 cors_origins=cors_origins, allowed_hosts=allowed_hosts),
                limits=ConnectionLimits(max_connections=max_connections,
                                        timeout_s=client_timeout))
    return 0


def _info(idx: VideoIndex) -> dict[str, Any]:
    m = idx.manifest
    longest = idx.longest()
    return {
        "index": display_path(idx.path, controls=False), "fingerprint": m.fingerprint,
        "dim": m.dim, "dtype": m.dtype,
        "metric": m.metric, "usearch": m.usearch, "counts": idx.counts(),
        "storage": idx.storage(),
        "generation": idx.generation, "producers": m.bundle_producers,
        "segmenting": {**m.segmenting, "description": idx.segmenting.describe()},
        "longest": {"path": display_path(longest[0], controls=False), "seconds": longest[1]}
        if longest else None,
        "updated": _iso(m.updated),
        "failed": [{"path": display_path(r.path, controls=False),
                    "error": display_path(r.error or "", controls=False)} for r in idx.failed()],
        "skipped": [{k: display_path(v, controls=False) for k, v in s.items()}
                    for s in m.skipped],
        "backend": _backend_choice(idx),
    }


def _files(idx: VideoIndex) -> Iterator[dict[str, Any]]:
    """One JSON-able row per catalog file, in key order."""
    segments = idx.segment_counts()
    for r in idx.records():
        yield {"id": r.key, "path": display_path(r.path, controls=False), "status": r.status,
               "segments": segments.get(r.key, 0), "size": r.size, "frames": r.frames,
               "indexed_at": _iso(r.updated_at),
               "error": None if r.error is None else display_path(r.error, controls=False)}


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _backend_choice(idx: VideoIndex) -> list[dict[str, str]] | dict[str, str]:
    """What ``--backend auto`` would run for the index's bundle here, best first, with the
    reasons (nothing is opened); or why it cannot tell."""
    from pig.engine.backends.select import choose
    from pig.engine.query.search import bundle_for

    try:
        return [{"backend": c.backend, "device": c.device, "precision": c.precision,
                 "reason": c.reason} for c in choose(bundle_for(idx))]
    except PigError as err:
        return {"error": display_path(str(err), controls=False)}


@cli.command()
@_index
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (--files: one "
              "JSON object per file)")
@click.option("--files", "list_files", is_flag=True,
              help="list the indexed files: status, segments, size, time indexed")
def info(index_dir: Path, as_json: bool, list_files: bool) -> int:
    """Counts, settings, producing bundle and failed files of an index; --files lists every
    file."""
    if list_files:
        with VideoIndex.open(index_dir, view=True) as idx:
            for row in _files(idx):
                if as_json:
                    click.echo(json.dumps(row))
                else:
                    why = f"  {display_path(row['error'])}" if row["error"] else ""
                    click.echo(f"{row['status']:<8} {row['segments']:>5} seg "
                               f"{row['size'] if row['size'] is not None else '-':>12} B  "
                               f"{row['indexed_at']}  {display_path(row['path'])}{why}")
        return 0
    with VideoIndex.open(index_dir, view=True) as idx:
        d = _info(idx)
    if as_json:
        click.echo(json.dumps(d))
        return 0
    c = d["counts"]
    click.echo(f"index       {display_path(d['index'])} (generation {d['generation']}, "
               f"updated {d['updated']})")
    click.echo(f"model       {d['fingerprint']}")
    click.echo(f"vectors     {c['vectors']} x {d['dim']} {d['dtype']}, metric {d['metric']}, "
               + ", ".join(f"{k} {v}" for k, v in sorted(d["usearch"].items()) if k != "metric"))
    st = d["storage"]
    click.echo(f"storage     base {st['base']} (tombstones {st['tombstones']}), delta "
               f"{st['delta']}; compacts past {st['compact_ratio']:.0%} of the base; files "
               + ", ".join(st["files"]))
    click.echo(f"files       {c['indexed']} indexed, {c['failed']} failed; "
               f"{c['vectors']} segments")
    click.echo(f"segmenting  {d['segmenting']['description']}")
    if d["longest"]:
        longest = d["longest"]
        click.echo(f"longest     {format_time(longest['seconds'])} "
                   f"({longest['seconds']:.1f} s) {display_path(longest['path'])}")
    for p in d["producers"]:
        click.echo("producer    " + ", ".join(f"{k}={v}" for k, v in sorted(p.items())))
    for f in d["failed"]:
        click.echo(f"failed      {display_path(f['path'])}: {display_path(f['error'])}")
    for f in d["skipped"]:
        click.echo(f"skipped     {display_path(f['path'])}: {display_path(f['reason'])}")
    if isinstance(d["backend"], dict):
        click.echo(f"backend     unknown here: {display_path(d['backend']['error'])}")
    for c in d["backend"] if isinstance(d["backend"], list) else ():
        click.echo(f"backend     {c['backend']} {c['device']} {c['precision']}: {c['reason']}")
    return 0


@cli.command()
@_index
@click.argument("paths", nargs=-1, required=True)
def remove(index_dir: Path, paths: tuple[str, ...]) -> int:
    """Remove files (or every file under a folder or prefix) from the index."""
    from pig.engine.media.sources import identity

    code = 0
    with VideoIndex.open(index_dir, writable=True) as idx:
        for p in paths:
            removed = idx.remove([p])
            if not removed:
                click.echo(f"{display_path(identity(p))}: not in the index", err=True)
                code = EXIT_FAILED
            for r in removed:
                click.echo(f"removed {display_path(r)}")
    return code


@cli.command()
@_index
@click.option("--from", "old", required=True, help="the library's old folder (or prefix)")
@click.option("--to", "new", required=True, help="where it is now (a folder or a prefix such "
              "as s3://bucket/videos)")
@click.option("--no-check", is_flag=True, help="rewrite even where the new files are missing")
def relocate(index_dir: Path, old: str, new: str, no_check: bool) -> int:
    """Rewrite the paths of the files under --from to lie under --to (a library moved to
    another disk, mount or bucket), without encoding anything; refused unless every new
    path is a file (--no-check: rewrite anyway)."""
    from pig.engine.media.sources import identity

    with VideoIndex.open(index_dir, writable=True) as idx:
        pairs = idx.relocate(old, new, check=not no_check)
        if not pairs:
            raise PigError(f"{display_path(identity(old))}: no indexed file is at or under it")
        gen = idx.commit()
    click.echo(f"relocated {len(pairs)} files from {display_path(identity(old))} to "
               f"{display_path(identity(new))} (generation {gen})")
    return 0


@cli.command()
@_index
def compact(index_dir: Path) -> int:
    """Fold the delta and the tombstones into a new base vectors file (one commit)."""
    with VideoIndex.open(index_dir, writable=True) as idx:
        before = idx.storage()
        gen = idx.compact()
        click.echo(f"compacted {idx.path}: base {before['base']} - {before['tombstones']} "
                   f"tombstones + delta {before['delta']} -> base {idx.storage()['base']} "
                   f"(generation {gen})")
    return 0


@cli.command("restore-manifest")
@_index
def restore_manifest(index_dir: Path) -> int:
    """Rewrite a lost or unreadable manifest.json from the copy kept in the catalog."""
    m = VideoIndex.restore_manifest(index_dir)
    click.echo(f"restored {index_dir.absolute() / 'manifest.json'} (generation {m.generation})")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (errors: :mod:`pig.cli.console`)."""
    console.run(cli, argv, "pig-engine")


if __name__ == "__main__":
    main()

"""``pig-engine``: index videos, search them by text, inspect and edit an index.

Exit codes: 0 success; 1 some videos failed to index (or a path to remove matched nothing);
2 a user error (one line on stderr naming the file and the problem); 3 a fault of the
environment (a damaged index file, e.g. ``catalog.sqlite``: one line naming it and the way
back); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; ``index`` commits what it encoded
first).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from pig import console
from pig.engine.backends.select import BACKENDS
from pig.engine.display import Detail, display_path
from pig.engine.graphs import PRECISIONS
from pig.engine.index import DTYPES, VideoIndex
from pig.engine.index.store import GROUP_BY
from pig.engine.limits import MAX_K, MAX_MOMENTS, MAX_OFFSET
from pig.engine.media.decoders import CHOICES as DECODER_CHOICES
from pig.engine.media.segments import MODES, Segmenting, format_span, format_time
from pig.engine.query.search import check_queries, read_queries_file
from pig.errors import IndexDamaged, PigError

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
                        help="also say why each backend, precision and decoder was chosen "
                        "(index: and list each file passed over by extension)")


@click.group(context_settings=console.CONTEXT)
def cli() -> None:
    """PIG text-to-video retrieval: index videos, then search them with text."""


_INDEXING: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.argument("paths", nargs=-1, required=True),  # local paths or URLs (s3://...)
    click.option("--bundle", type=_PATH, required=True,
                 help="bundle directory (pig-export --onnx)"),
    _index,
    click.option("--glob", multiple=True, help="file pattern inside folders, repeatable (OR-ed; "
                 "braces expand: '*.{mp4,mov}'); default: the known video extensions "
                 "(docs/media.md)"),
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
    click.option("--runner", type=click.Choice(["local", "ray"]), default="local",
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
@click.option("--metadata", "metadata_file", type=_PATH, default=None,
              help="user metadata per video: JSON lines or .csv with a 'path' field (filter "
              "with --where 'meta.KEY ...'); a VIDEO.json beside a video is read too")
def index(sync_: bool, metadata_file: Path | None, **kw: Any) -> int:
    """Embed the videos in PATHS (files and folders) into an index.

    Incremental and resumable: unchanged files are skipped, changed ones re-embedded. Videos
    that cannot be decoded are recorded with the reason, listed, and give exit code 1; so do
    folders that cannot be read (skipped; what an earlier run indexed there is kept).
    The segmenting options are fixed when the index is created; a later run that gives
    different ones is refused. With --runner ray, --workers does not apply (--decode-cpus
    does). Indexed files under PATHS that are gone from disk are counted; --sync (or
    `pig-engine sync`) removes them.
    """
    if kw["allow_mass_removal"] and not sync_:
        raise PigError("--allow-mass-removal applies to removals: give it with --sync (or use "
                       "pig-engine sync)")
    from pig.engine.ingest.metadata import read_metadata

    metadata = read_metadata(metadata_file) if metadata_file is not None else None
    return _run_index(kw, sync=sync_, metadata=metadata)


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
    from pig.engine.ingest.local_runner import open_local
    from pig.engine.ingest.options import PipelineOptions
    from pig.engine.ingest.sync import MAX_REMOVAL

    run_on = open_local
    if kw["runner"] == "ray":
        from pig.engine.ingest.ray_runner import RayOptions, RayRunner

        run_on = RayRunner(RayOptions(address=kw["ray_address"], decode_cpus=kw["decode_cpus"],
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
        segmenting=segmenting, options=options, log=_log, runner=run_on,
        usearch_settings={k: kw[k] for k in ("connectivity", "expansion_add",
                                              "expansion_search")},
        progress=sys.stderr.isatty() if kw["progress"] is None else kw["progress"],
        max_removal=None if kw["allow_mass_removal"] else MAX_REMOVAL,
    )


def _run_index(kw: dict[str, Any], *, sync: bool,
               metadata: dict[str, dict[str, Any]] | None = None) -> int:
    from pig.engine.ingest.run import index_videos

    report = index_videos(**_run_args(kw), sync=sync, metadata=metadata)
    click.echo(report.summary(verbose=_VERBOSE))
    if report.interrupted:
        return 128 + report.interrupted
    return EXIT_FAILED if report.failed or report.skipped_paths else 0


def _segmenting(mode: str | None, seconds: float | None, stride: float | None,
                whole_max: float | None, shot_min: float | None) -> Segmenting | None:
    """The setting the options ask for, or None when none is given (the index's own)."""
    if all(v is None for v in (mode, seconds, stride, whole_max, shot_min)):
        return None
    default = Segmenting()
    chosen = mode or ("fixed" if seconds is not None else "auto")
    return Segmenting(
        mode=chosen,  # type: ignore[arg-type]  # a click.Choice of the modes
        seconds=default.seconds if seconds is None else seconds,
        stride=stride,
        whole_max=default.whole_max if whole_max is None else whole_max,
        shot_min=default.shot_min if shot_min is None else shot_min,
    )


_indexes = click.option("--index", "index_dirs", type=_PATH, required=True, multiple=True,
                        help="index directory (repeat to search several of one bundle as one)")


@cli.command()
@click.option("--query", "-q", "queries", multiple=True, help="query text (repeatable: one "
              "query each)")
@click.option("--queries-file", type=_PATH, default=None,
              help="one query per line ('-': standard input)")
@click.option("--like", "likes", multiple=True, metavar="PATH|@ID[:SEGMENT]",
              help="query by example: a video or image file, or an indexed video (a hit's id, "
              "optionally one segment) (repeatable: one query each)")
@click.option("--not", "negatives", multiple=True, metavar="TEXT",
              help="subtract this text from every query (repeatable)")
@click.option("--combine", is_flag=True, help="all --query/--like make ONE query: their "
              "weighted sum (see --weight)")
@click.option("--weight", "weights", multiple=True, type=click.FloatRange(0, min_open=True),
              help="with --combine: the weight of each --query, then each --like, in order "
              "(default 1)")
@click.option("--where", "where", multiple=True, metavar="EXPR",
              help="filter, e.g. 'duration_s >= 60', 'path ~ /cams/lobby/*', "
              "'meta.camera in [lobby, door]' (repeatable: all must hold)")
@_indexes
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True,
              help="hits per query (files with --group-by video)")
@click.option("--offset", type=click.IntRange(0, MAX_OFFSET), default=0, show_default=True,
              help="skip this many hits (the next page: the offset an answer names)")
@click.option("--min-score", type=click.FloatRange(-2, 2), default=None,
              help="drop hits scoring below this")
@click.option("--group-by", type=click.Choice(GROUP_BY), default="video", show_default=True,
              help="video: one hit per file, its best segment; segment: raw segment hits")
@click.option("--moments", type=click.IntRange(1, MAX_MOMENTS), default=1, show_default=True,
              help="with --group-by video: each file's N best segments (scored exactly)")
@click.option("--merge-adjacent", is_flag=True,
              help="with --moments: adjacent segments among them become one span")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per query")
@_verbose
@click.option("--exact/--approximate", default=None,
              help="brute-force scan, or HNSW (default: scan up to 10k vectors, HNSW above)")
@click.option("--bundle", type=_PATH, default=None,
              help="bundle directory (default: the one recorded in the index)")
@_backend
@_precision
def search(queries: tuple[str, ...], queries_file: Path | None, likes: tuple[str, ...],
           negatives: tuple[str, ...], combine: bool, weights: tuple[float, ...],
           where: tuple[str, ...], index_dirs: tuple[Path, ...], k: int, offset: int,
           min_score: float | None, group_by: str, moments: int, merge_adjacent: bool,
           as_json: bool, exact: bool | None, bundle: Path | None, backend: str,
           precision: str | None) -> int:
    """Find the videos (and the moments in them) that best match each query: a text, or an
    example (--like); see docs/search.md.

    With several --index, a hit's line shows [N] before its path: the position of its index
    (from 0), the ``index`` field of --json."""
    from pig.engine.query.engine import QueryEngine
    from pig.engine.query.filters import parse_where
    from pig.engine.query.request import Example, Request, Term
    from pig.engine.query.search import answer_json

    texts = list(queries) + (read_queries_file(queries_file) if queries_file else [])
    if not texts and not likes:
        raise PigError("no query: give --query TEXT, --queries-file FILE or --like EXAMPLE")
    check_queries(texts)
    terms = [Term(text=t) for t in texts] + [Term(like=Example.parse(x)) for x in likes]
    if weights and not combine:
        raise PigError("--weight: only with --combine (the weights of one combined query)")
    if len(weights) > len(terms):
        raise PigError(f"--weight: {len(weights)} weights for {len(terms)} terms")
    terms = [Term(t.text, t.like, w) for t, w in
             zip(terms, [*weights, *[1.0] * (len(terms) - len(weights))], strict=True)]
    groups = [tuple(terms)] if combine else [(t,) for t in terms]
    filt = parse_where(where)
    requests = [Request(g, tuple(Term(text=n) for n in negatives), filt, k, offset, min_score,
                        group_by, exact, moments, merge_adjacent) for g in groups]
    with QueryEngine(index_dirs, bundle, backend, precision, log=_log) as engine:
        answers = engine.run(requests)
        length = engine.bundle.tokenizer_spec.max_length
    for i, (request, answer) in enumerate(zip(requests, answers, strict=True), 1):
        if answer.truncated:
            _log(f"note: query {i} is longer than the model's text length ({length} tokens "
                 "with BOS/EOS): only its beginning was searched")
        row = answer_json(request, answer)
        if as_json:
            click.echo(json.dumps(row))
            continue
        click.echo(f"query: {display_path(row['query'])}")
        for hit in row["results"]:
            span = format_span(hit["start_s"], hit["end_s"])
            shard = f"[{hit['index']}] " if len(index_dirs) > 1 else ""
            click.echo(f"{hit['rank']:>4}  {hit['score']:.4f}  {span:>13}  {shard}"
                       f"{display_path(hit['path'])}")
            for m in hit.get("moments", []):  # the file's best spans
                span = format_span(m["start_s"], m["end_s"])
                click.echo(f"{'':>4}  {m['score']:.4f}  {span:>13}  moment")
        if not row["results"]:
            click.echo("   (no hits)" if offset or min_score is not None or where else
                       "   (the indexes are empty)" if len(index_dirs) > 1 else
                       "   (index is empty)")
        if row["next"] is not None:
            _log(f"note: query {i} has more hits: --offset {row['next']}")
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
        "partial": [{"path": display_path(path, controls=False), "done_s": done,
                     "segments": segments, "total": total}
                    for path, done, segments, total in idx.partial()],
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
    file. Of a damaged index: what its manifest says of the last commit, and what is damaged
    (exit 3)."""
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
    try:
        with VideoIndex.open(index_dir, view=True) as idx:
            idx.check_catalog()
            d = _info(idx)
    except IndexDamaged as err:
        return _damaged_info(index_dir, err, as_json)
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
    for f in d["partial"]:
        of = f" of {f['total']}" if f["total"] is not None else ""
        click.echo(f"partial     {display_path(f['path'])}: {f['segments']}{of} segments, up "
                   f"to {format_time(f['done_s'])}; run index again to resume")
    return 0


def _damaged_info(index_dir: Path, err: IndexDamaged, as_json: bool) -> int:
    """``info`` of an index that cannot be opened: the damage and the manifest's summary of
    the last commit (when the manifest itself is readable)."""
    from pig.engine.index.manifest import IndexManifest

    try:
        m = IndexManifest.read(index_dir.absolute())
    except PigError:
        raise err from None
    shown = display_path(index_dir.absolute(), controls=False)
    if as_json:
        click.echo(json.dumps({"index": shown, "damaged": str(err), "fingerprint": m.fingerprint,
                               "generation": m.generation, "counts": m.counts}))
    else:
        c = m.counts
        click.echo(f"index       {display_path(shown)} (DAMAGED)")
        click.echo(f"damaged     {display_path(str(err))}")
        click.echo(f"model       {m.fingerprint}")
        click.echo(f"last commit generation {m.generation}: {c.get('indexed', 0)} files "
                   f"indexed, {c.get('failed', 0)} failed, {c.get('vectors', 0)} vectors "
                   "(from manifest.json)")
    return err.exit_code


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


@cli.command()
@_index
@click.argument("paths", nargs=-1, type=_PATH)
@click.option("--set", "assign", multiple=True, metavar="KEY=VALUE",
              help="set a metadata key of PATHS (VALUE: a number, true/false, or text)")
@click.option("--unset", multiple=True, metavar="KEY", help="remove a metadata key of PATHS")
@click.option("--metadata", "metadata_file", type=_PATH, default=None,
              help="replace the metadata of the files it names (JSON lines or .csv, 'path')")
def tag(index_dir: Path, paths: tuple[Path, ...], assign: tuple[str, ...],
        unset: tuple[str, ...], metadata_file: Path | None) -> int:
    """Change the user metadata of indexed videos (filter on it: --where 'meta.KEY ...')."""
    from pig.engine.ingest.metadata import read_metadata
    from pig.engine.query.filters import check_field

    changes: dict[str, Any] = {}
    for item in assign:
        key, eq, raw = item.partition("=")
        if not eq:
            raise PigError(f"--set {item!r}: expected KEY=VALUE")
        check_field(f"meta.{key}")
        changes[key] = _meta_value(raw)
    for key in unset:
        check_field(f"meta.{key}")
    if (assign or unset) and not paths:
        raise PigError("--set/--unset: name the videos (PATHS)")
    if not (assign or unset or metadata_file):
        raise PigError("nothing to change: give --set, --unset or --metadata")
    todo = read_metadata(metadata_file) if metadata_file is not None else {}
    with VideoIndex.open(index_dir, writable=True) as idx:
        missing = []
        for path, meta in todo.items():
            if not idx.set_meta(path, meta):
                missing.append(path)
        for p in paths:
            found = idx.lookup(p)
            if found is None:
                missing.append(str(p))
                continue
            meta = {**idx.facts([found.key])[found.key]["meta"], **changes}
            for key in unset:
                meta.pop(key, None)
            idx.set_meta(p, meta)
        for path in missing:
            _log(f"not in the index: {path}")
    changed = len(todo) + len(paths) - len(missing)
    click.echo(f"tagged {changed} video{'s' if changed != 1 else ''}")
    return EXIT_FAILED if missing else 0


def _meta_value(raw: str) -> Any:
    """A --set value: an integer, a finite number, true/false, or else the text."""
    if raw in ("true", "false"):
        return raw == "true"
    for kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            continue
        if value == value and abs(value) != float("inf"):
            return value
    return raw


@cli.command("restore-manifest")
@_index
def restore_manifest(index_dir: Path) -> int:
    """Rewrite a lost or unreadable manifest.json from the copy kept in the catalog."""
    m = VideoIndex.restore_manifest(index_dir)
    click.echo(f"restored {index_dir.absolute() / 'manifest.json'} (generation {m.generation})")
    return 0


@cli.command("restore-catalog")
@_index
def restore_catalog(index_dir: Path) -> int:
    """Put back the copy of the last commit's catalog (catalog.sqlite.copy) in place of a
    damaged catalog.sqlite; the damaged file is kept beside it."""
    generation, aside = VideoIndex.restore_catalog(index_dir)
    d = index_dir.absolute()
    kept = f"the damaged file is kept as {display_path(aside.name)}" if aside else "it was lost"
    click.echo(f"restored {display_path(d / 'catalog.sqlite')} from its copy (generation "
               f"{generation}); {kept}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "pig-engine")


if __name__ == "__main__":
    main()

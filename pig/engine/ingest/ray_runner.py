"""``pig-engine index --runner ray``: the decode and encode stages on Ray Data.

::

    driver (this process): discover, plan against the catalog (writer.run_plans)
      Ray Data:  from_items(planned files)     blocks of 4-64 files, ~4 per cluster CPU
                 -> flat_map(decode + preprocess)  CPU tasks, --decode-cpus at once; a row
                                                   per segment, streamed as decoded
                 -> map_batches(_Encoder)          actor pool (--encoders), each opens the
                                                   bundle once; --encoder-gpus per actor
                 -> iter_batches                   streaming: Ray's backpressure bounds
                                                   the blocks in flight
    driver: gathers each file's segment vectors; writer.IndexWriter adds a file whole and
            commits (the local pipeline's commit protocol)

The per-file work is :func:`pig.engine.ingest.work.decode_file` and
:func:`~pig.engine.ingest.work.preprocess_segment`, the functions the local workers call, so
segments and failure reasons are the same; a file a worker cannot read comes back as that
file's failure. The driver alone writes the index, so
a killed driver leaves the last commit and a rerun (either runner) does the rest; a result
that arrives twice (a retried task) is added once. Encoder actors are restarted by Ray when
they die and their batches retried (Ray Data's actor defaults: ``max_restarts=-1``,
``max_task_retries=-1``); decode tasks are retried (``max_retries``).

Ray is imported only here, when this runner is used. Without an address Ray starts in this
process (on this machine); with one it joins that cluster, whose every node needs
pig-engine with the ``ray`` extra and the bundle and videos at the same paths (a shared
filesystem).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.backends.select import choose, open_backend
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, Plan
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.ray_local import LocalRay
from pig.engine.ingest.work import FileFailure, decode_file, preprocess_segment
from pig.engine.ingest.writer import Embed, IndexWriter
from pig.engine.media.segments import Segmenting
from pig.engine.media.video import VideoSegment
from pig.engine.recipe import PreprocessRecipe
from pig.errors import EnvironmentFault, PigError
from pig.signals import StopSignals

INSTALL = "pip install 'pig-engine[ray]' (ray[data]==2.60.0)"
SHARED = ("the bundle and the videos must be readable at the same paths on every Ray node "
          "(a shared filesystem)")
# Decode task granularity: files per task, aiming at ``_BLOCKS_PER_CPU`` tasks per cluster CPU
# (Ray's per-task cost is amortised over many files; a few tasks per CPU balance the tail).
_BLOCKS_PER_CPU = 4
_FILES_PER_BLOCK = (4, 64)  # at least, at most


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. ``address``: a Ray cluster (``auto``, ``ray://...``,
    ``host:port``); None starts Ray on this machine. ``decode_cpus``: decode tasks at once
    (None: as many as the cluster has CPUs free). ``encoders``: encoder actors.
    ``encoder_gpus``: GPUs per actor (None: 1 where the cluster has GPUs, else 0, which runs
    ONNX Runtime on CPU; fractions pack several actors on one GPU)."""

    address: str | None = None
    decode_cpus: int | None = None
    encoders: int = 1
    encoder_gpus: float | None = None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise PigError(f"--runner ray needs Ray Data, not installed here: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class _Choice:
    """The backend every encoder actor opens (chosen once, on an encoder's resources)."""

    backend: str
    device: str
    precision: str
    node: str


def _choose(bundle_dir: str, backend: str, precision: str | None) -> _Choice:
    """Runs as a Ray task with an encoder actor's resources: load the bundle there, choose."""
    c = choose(Bundle.load(bundle_dir), backend, precision, ("video",))[0]
    return _Choice(c.backend, c.device, c.precision, platform.node())


def _decode(row: dict[str, Any], recipe: PreprocessRecipe, segmenting: Segmenting
            ) -> Iterator[dict[str, Any]]:
    """One planned file -> a row per segment (its preprocessed pixels), streamed as decoded;
    the last one also carries the file's :class:`Entry`, or a row carries its failure."""
    path = os.fsdecode(row["path"])
    plan = Plan(path, "embed", str(row["reason"]), str(row["digest"]) or None)
    shape = (recipe.num_frames, 3, recipe.size, recipe.size)

    def out(ordinal: int, pixels: np.ndarray, entry: bytes = b"", error: str = ""
            ) -> dict[str, Any]:
        return {"path": row["path"], "segment": ordinal, "pixels": pixels, "entry": entry,
                "error": error}

    held: dict[str, Any] | None = None  # the segment before, sent once another one follows
    items = decode_file(plan, recipe, segmenting)
    for item in items:
        if isinstance(item, VideoSegment):
            pixels = np.empty(shape, np.float32)
            failure = preprocess_segment(item, recipe, pixels, path)
            if failure is None:
                if held is not None:
                    yield held
                held = out(item.ordinal, pixels)
                continue
            items.close()
            item = failure
        if isinstance(item, FileFailure):
            yield out(-1, np.zeros(shape, np.float32), error=item.reason)
            return
        last = held or out(-1, np.zeros(shape, np.float32))
        yield {**last, "entry": pickle.dumps(item)}


class _Encoder:
    """A Ray Data actor: opens the bundle's video encoder once, encodes batches of rows."""

    def __init__(self, bundle_dir: str, choice: _Choice, threads: int) -> None:
        bundle = Bundle.load(bundle_dir)
        self.dim = bundle.embedding_dim
        self.encoder = open_backend(bundle, choice.backend, choice.precision,
                                    branches=("video",), device=choice.device, threads=threads,
                                    log=lambda _: None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["segment"] >= 0
        vectors = np.zeros((len(ok), self.dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_video(batch["pixels"][ok])
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


class _Files:
    """The driver's side: gathers each file's segment vectors (they arrive in any order,
    across batches) and hands a file to the writer whole, once (a retried block can deliver
    rows again), or its failure."""

    def __init__(self, writer: IndexWriter) -> None:
        self.writer = writer
        self.vectors: dict[str, dict[int, np.ndarray]] = {}
        self.entries: dict[str, Entry] = {}
        self.done: set[str] = set()

    def take(self, batch: dict[str, np.ndarray]) -> None:
        self.writer.encoded(int((batch["segment"] >= 0).sum()))
        for i, raw in enumerate(batch["path"]):
            path = os.fsdecode(bytes(raw))
            if path in self.done:
                continue
            if batch["error"][i]:
                self._finish(path)
                self.writer.fail(FileFailure(path, str(batch["error"][i])))
                continue
            got = self.vectors.setdefault(path, {})
            if batch["segment"][i] >= 0:
                got[int(batch["segment"][i])] = batch["vector"][i].copy()
            if batch["entry"][i]:
                self.entries[path] = pickle.loads(batch["entry"][i])
            entry = self.entries.get(path)
            if entry is not None and len(got) == len(entry.spans):
                self._finish(path)
                self.writer.add(entry, np.stack([got[k] for k in range(len(entry.spans))]))

    def _finish(self, path: str) -> None:
        self.done.add(path)
        self.vectors.pop(path, None)
        self.entries.pop(path, None)


def _embed(ray: Any, bundle: Bundle, choice: _Choice, options: PipelineOptions,
           ray_options: RayOptions, encoder_gpus: float, todo: list[Plan], writer: IndexWriter,
           signals: StopSignals) -> None:
    items = [{"path": os.fsencode(p.path), "reason": p.reason, "digest": p.digest or ""}
             for p in todo]
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    lo, hi = _FILES_PER_BLOCK
    per_block = min(hi, max(lo, -(-len(items) // (_BLOCKS_PER_CPU * cpus))))
    blocks = max(1, -(-len(items) // per_block))
    # Decode tasks reserve a CPU each, encoder actors none: their ONNX Runtime threads share
    # the cores with the decoders, as in the local pipeline (and differing resources keep
    # Ray Data from fusing the decode into the actors, which would serialise it there).
    ds = (
        ray.data.from_items(items, override_num_blocks=blocks)
        .flat_map(_decode, fn_kwargs={"recipe": bundle.recipe,
                                      "segmenting": writer.index.segmenting}, num_cpus=1,
                  compute=ray.data.TaskPoolStrategy(size=ray_options.decode_cpus))
        .map_batches(_Encoder, fn_constructor_args=(str(bundle.dir), choice,
                                                    options.encoder_threads),
                     batch_size=options.batch_size, batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(size=ray_options.encoders),
                     num_cpus=0, num_gpus=encoder_gpus)
    )
    files = _Files(writer)
    # No prefetch: with it Ray Data fetches blocks on its own threads ("iter_threaded"),
    # which outlive a closed iterator and end the process if they call Ray after shutdown.
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0))
    try:
        for batch in batches:
            files.take(batch)
            if signals.signum:  # Ctrl-C/SIGTERM: stop here; what was added is committed
                raise KeyboardInterrupt
    except PigError:
        raise
    except Exception as err:  # e.g. an encoder actor on a node that cannot read the bundle
        user = _user_error(err)
        if user is not None:
            raise _shared_error(str(bundle.dir), user) from None
        if isinstance(err, ray.exceptions.RayError):  # a node, agent or worker died
            raise EnvironmentFault(f"Ray failed mid-run: {_what_died(err)}; the files done "
                                   "so far are committed, a rerun indexes the rest") from None
        raise
    finally:  # stop the streaming execution now, not when Ray is already shut down
        batches.close()
        _wait_for_executors()
        # An exception on its way out keeps this frame and its locals alive until it is
        # handled (after ray.shutdown() for one that leaves the runner) or, in a reference
        # cycle, until the GC runs: drop the Ray Data objects now (see RayRunner.__call__).
        ds = batches = batch = None


def _wait_for_executors(timeout: float = 30.0) -> None:
    """Join Ray Data's executor threads, which stop soon after their iterator is closed but
    are joined for 2 s only: one still running at ``ray.shutdown()`` makes Ray's core worker
    end the process with exit 1 (seen on a loaded machine after Ctrl-C)."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("StreamingExecutor-"):
            thread.join(max(0.0, deadline - time.monotonic()))


def _what_died(err: BaseException) -> str:
    """One line out of a Ray error: its kind and the lines saying what died and why."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = [line for line in lines if any(w in line.lower() for w in ("died", "crashed",
                                                                          "dead", "killed"))]
    text = f"{type(err).__name__}: " + " ".join(dict.fromkeys(said or lines[:1]))
    return text if len(text) <= 400 else text[:397] + "..."


def _user_error(err: BaseException | None) -> PigError | None:
    """The PigError behind a Ray error (a worker's cause, chained), if there is one."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        cause = getattr(err, "cause", None)  # a RayTaskError's original exception
        if isinstance(cause, BaseException):
            err = cause
        elif isinstance(err, PigError):
            return err
        else:
            err = err.__cause__
    return None


def _shared_error(what: str, err: BaseException) -> PigError:
    return PigError(f"{what}: {_user_error(err) or err} (on a Ray node); {SHARED}")


class RayRunner:
    """A :data:`pig.engine.ingest.writer.Runner` running the encode side on Ray Data."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        if self.options.encoders < 1:
            raise PigError(f"--encoders must be >= 1, got {self.options.encoders}")

    @contextlib.contextmanager
    def __call__(self, bundle: Bundle, backend: str, precision: str | None,
                 options: PipelineOptions, log: Callable[[str], None] | None
                 ) -> Iterator[tuple[dict[str, Any], Embed]]:
        ray = _import_ray()
        started = not ray.is_initialized()
        local = None
        if started:
            if self.options.address is None:
                local = LocalRay(log)
                local.sweep()  # what a killed earlier run left behind
            self._init(ray)
            if local is not None:
                local.record(ray)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # the pipeline's tqdm bar shows progress
            ctx.print_on_execution_start = False
            # a failure is reported once, as one line (below): not Ray Data's own traceback
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
            gpus = self.options.encoder_gpus
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
            probe = ray.remote(num_cpus=0, num_gpus=gpus, max_retries=0)(_choose)
            try:
                choice = ray.get(probe.remote(str(bundle.dir), backend, precision))
            except PigError as err:
                raise _shared_error(str(bundle.dir), err) from None
            if log is not None:
                log(f"ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, "
                    f"{self.options.encoders} encoder(s) x {gpus:g} GPU: {choice.backend} "
                    f"({choice.device}, {choice.precision}) as chosen on {choice.node}")
            info = {"bundle": str(Path(bundle.dir).resolve()), "backend": choice.backend,
                    "device": choice.device, "precision": choice.precision, "runner": "ray"}
            yield info, partial(_embed, ray, bundle, choice, options, self.options, gpus)
        finally:
            if local is not None:
                local.stop_watching()
            if started:
                # Finalise the Ray objects left in reference cycles now, on this thread: Ray
                # Data's touch Ray when finalised, and after ray.shutdown() that makes the core
                # worker end the process with exit 1 (ray-project/ray#19115), on whatever
                # thread the GC runs them (seen in CI after Ctrl-C: 1 instead of 130).
                gc.collect()
                ray.shutdown()
                if local is not None:
                    local.release()

    def _init(self, ray: Any) -> None:
        o = self.options
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": "warning"}
        if o.address is None:  # this machine: one decode task per core
            kwargs["num_cpus"] = o.decode_cpus or os.cpu_count() or 1
        try:
            ray.init(address=o.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise PigError(f"cannot start or join Ray at {o.address or 'this machine'}: "
                           f"{err}") from None

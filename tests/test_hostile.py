"""Hostile input and faults (issue 17, classes 3-8 and 11): hostile names, FIFOs and devices,
signals, unbounded requests, untrusted bundles, broken weights, hostile manifest fields and
unlistable entries. Every case asserts the exit code, the one-line message, and that the
index still opens and answers as before. Inputs are generated; the hangs run under a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.limits import MAX_K, MAX_QUERIES_FILE_BYTES, MAX_QUERY_CHARS
from tests.fake_bundle import FakeSizes, write_bundle
from tests.test_pipeline import make_clips

SIZES = FakeSizes(frames=4, size=32, vocab=49408, length=16)
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
HANG = 60  # seconds after which a subprocess counts as hung


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b", SIZES))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``pig-engine ARGV`` in this process: (exit code, stdout, stderr)."""
    from pig.cli.engine import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    return int(stop.value.code or 0), out, err


def one_line_error(err: str, *fragments: str) -> None:
    """One error line, the last; before it at most progress notes (``backend: ...``)."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("pig-engine: error: "), err
    assert all(line.startswith("backend: ") for line in lines[:-1]), err
    for f in fragments:
        assert f in lines[-1], (f, err)


def answers(idx: Path, bundle: Bundle) -> list[tuple[str, float]]:
    """What the index answers now (exact search of one fixed query)."""
    from pig.engine.query.engine import QueryEngine

    with QueryEngine(idx, bundle.dir) as s:
        return [(h.path, round(h.score, 6)) for h in s.search(["a red circle"], k=50)[0]]


def counts(idx: Path) -> dict[str, int]:
    with VideoIndex.open(idx, view=True) as vi:
        return vi.counts()


@pytest.fixture(scope="module")
def built(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of 4 clips (module-scoped: tests that change it copy it first)."""
    root = tmp_path_factory.mktemp("built")
    make_clips(root / "clips", n=4)
    assert index_videos([root / "clips"], bundle, root / "idx").indexed == 4
    return root / "idx"


# --- 3: any name the filesystem allows ------------------------------------------------------

def test_hostile_names_are_indexed_and_shown_escaped(
        bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = tmp_path / "clips"
    make_clips(clips, n=3)
    raw = os.fsencode(clips)
    names = [b"bad\xff\xfe.mp4", b"new\nline.mp4", b"bell\x07tab\t.mp4"]
    for src, name in zip(sorted(clips.iterdir()), names, strict=True):
        os.rename(src, raw + b"/" + name)
    with open(raw + b"/broken\xff\n.mp4", "wb") as f:
        f.write(b"not a video")
    idx = tmp_path / "idx"
    code, out, err = run_cli(capsys, "index", str(clips), "--bundle", str(bundle.dir),
                             "--index", str(idx))
    assert code == 1, err  # one file failed: recorded, the run went on
    assert out.splitlines()[0].startswith("4 files: 3 indexed, 1 failed")
    assert f"failed: {clips}/broken\\xff\\n.mp4: " in out
    assert counts(idx) == {"vectors": 3, "indexed": 3, "failed": 1}

    code, out, _ = run_cli(capsys, "info", "--index", str(idx))
    assert code == 0 and f"failed      {clips}/broken\\xff\\n.mp4: " in out
    code, out, _ = run_cli(capsys, "info", "--index", str(idx), "--json")
    info = json.loads(out)  # valid JSON, and plain UTF-8 (no lone surrogates)
    out.encode("utf-8")
    assert info["failed"][0]["path"] == f"{clips}/broken\\xff\n.mp4"
    code, out, _ = run_cli(capsys, "search", "-q", "red", "--index", str(idx), "-k", "5",
                           "--json")
    shown = {r["path"] for r in json.loads(out)["results"]}
    assert shown == {f"{clips}/bad\\xff\\xfe.mp4", f"{clips}/new\nline.mp4",
                     f"{clips}/bell\x07tab\t.mp4"}
    code, out, _ = run_cli(capsys, "search", "-q", "red", "--index", str(idx))
    assert f"{clips}/new\\nline.mp4" in out and f"{clips}/bell\\x07tab\\t.mp4" in out
    assert len(out.splitlines()) == 4  # the query line and 3 hits: no forged lines

    # the names round-trip through the catalog: a rerun finds every file unchanged
    code, out, _ = run_cli(capsys, "index", str(clips), "--bundle", str(bundle.dir),
                           "--index", str(idx))
    assert out.splitlines()[0].startswith("4 files: 0 indexed, 0 failed, 4 skipped")
    with VideoIndex.open(idx, writable=True) as vi:
        assert vi.remove([os.fsdecode(raw + b"/bad\xff\xfe.mp4")])
    assert counts(idx) == {"vectors": 2, "indexed": 2, "failed": 1}


def test_display_path() -> None:
    from pig.engine.display import display_path

    name = b"/v/a\xffb\n\x1b[31m" + "\u202e.mp4".encode()
    assert display_path(name) == "/v/a\\xffb\\n\\x1b[31m\\u202e.mp4"
    assert display_path("/v/ok é.mp4") == "/v/ok é.mp4"
    assert display_path(b"/v/\xff\n", controls=False) == "/v/\\xff\n"


# --- 4: FIFOs and devices swapped in after discovery; Ctrl-C and SIGTERM ----------------------

def test_fifo_and_device_do_not_hang_hashing_or_decoding(tmp_path: Path) -> None:
    from pig.engine.bundle import sha256_file
    from pig.engine.host.regular_file import NotRegularFile
    from pig.engine.index.catalog import file_digest
    from pig.engine.media.video import read_video
    from pig.errors import VideoReadError

    fifo, zero = tmp_path / "f.mp4", tmp_path / "z.mp4"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    t0 = time.monotonic()
    for path in (fifo, zero):
        for read in (file_digest, sha256_file):
            with pytest.raises(NotRegularFile, match="not a regular file"):
                read(path)
        with pytest.raises(VideoReadError, match="not a regular file"):
            read_video(path, 4)
    assert time.monotonic() - t0 < 5


def test_index_survives_files_swapped_for_fifo_and_device(bundle: Bundle, tmp_path: Path) -> None:
    """In a subprocess (a hang would block pytest): files planned for indexing are replaced
    by a FIFO and a symlink to /dev/zero, and a new name is a FIFO."""
    clips = make_clips(tmp_path / "clips", n=4)
    idx = tmp_path / "idx"
    index_videos(clips, bundle, idx)
    before = dict(answers(idx, bundle))
    for p in clips[:2]:
        p.unlink()
    os.mkfifo(clips[0])
    clips[1].symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "clips" / "new.mp4")
    script = textwrap.dedent(f"""
        from pig.engine.bundle import Bundle
        from pig.engine.backends import open_backend
        from pig.engine.index import VideoIndex
        from pig.engine.ingest.local_runner import Pipeline
        b = Bundle.load({str(bundle.dir)!r})
        enc = open_backend(b, branches=("video",))
        files = {[str(p) for p in clips] + [str(tmp_path / "clips" / "new.mp4")]!r}
        with VideoIndex.open({str(idx)!r}, writable=True) as vi:
            r = Pipeline(enc, b.recipe).run(vi, files)
        print(r.summary())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=HANG, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "3 failed" in done.stdout and done.stdout.count("not a regular file") == 3
    assert counts(idx) == {"vectors": 2, "indexed": 2, "failed": 3}
    kept = dict(answers(idx, bundle))
    assert kept == {p: s for p, s in before.items() if p in map(str, clips[2:])}


SLOW_ENCODER = """
import sys, threading
from pig import signals
from pig.engine.ingest import local_runner
real = local_runner.open_backend
got = threading.Event()
handle = signals.StopSignals._handle
def seen(self, signum, frame):  # the run's handler took the signal
    handle(self, signum, frame)
    got.set()
signals.StopSignals._handle = seen
def slow(*a, **k):
    enc = real(*a, **k)
    inner = enc.encode_video
    def encode_video(x):
        if not got.is_set():  # the first batch waits until the run's handler took the signal
            print("ENCODE", len(x), file=sys.stderr, flush=True)
            got.wait()
        return inner(x)
    enc.encode_video = encode_video
    return enc
local_runner.open_backend = slow
sys.argv = ["pig-engine"] + sys.argv[1:]
from pig.startup import pig_engine
pig_engine()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_commits_what_is_in_flight(bundle: Bundle, tmp_path: Path, signum: int) -> None:
    make_clips(tmp_path / "clips", n=9)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-c", SLOW_ENCODER, "index", str(tmp_path / "clips"), "--bundle",
           str(bundle.dir), "--index", str(idx), "--batch-size", "2", "--workers", "1",
           "--commit-every", "1000"]  # nothing commits on its own before the end
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stderr is not None
    for line in proc.stderr:  # the first batch is encoding (held until the signal was taken:
        if line.startswith("ENCODE"):  # no timing), the next ones are being filled; the files
            break  # not started are dropped, those in flight are finished (else: a hang)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert "ENCODE" not in err  # the batch in the encoder was the last one
    assert "committing what is encoded" in err
    with VideoIndex.open(idx, view=True) as vi:  # a file whose end was not yet decoded
        partial = len(vi.partial())  # when its vector came is partial (a rerun resumes it)
        done = vi.counts()["indexed"] - partial
    assert 1 <= done + partial <= 2  # the one batch of 2
    left = int(out.split("interrupted: ")[1].split()[0])
    assert done + left == 9
    rerun = index_videos([tmp_path / "clips"], bundle, idx)
    assert (rerun.indexed, dict(rerun.skipped)) == (left, {"unchanged": done})


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler: pig.startup's, the first pig-engine code
    to run (Python itself only catches SIGINT)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(mask, 16) & 1 << (signal.SIGTERM - 1))


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5])  # imports, index open, encoder load
def test_ctrl_c_during_start_up_is_one_line(built: Path, delay: float) -> None:
    proc = subprocess.Popen([str(BIN / "pig-engine"), "search", "-q", "red", "--index",
                             str(built)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + HANG  # the interpreter's own start-up is out of our reach
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=HANG)
    if out.startswith("query: red"):  # done before the signal came (or while exiting)
        assert proc.returncode in (0, -signal.SIGINT)
        return
    assert "Traceback" not in err and "Error" not in err, err
    assert proc.returncode == 130 and err.splitlines()[-1] == "pig-engine: interrupted"


# --- 5: unbounded work ---------------------------------------------------------------------

def test_limits_are_one_line_and_the_index_still_answers(
        built: Path, bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = answers(built, bundle)
    base = ["search", "--index", str(built)]
    for k in (str(MAX_K + 1), "0", str(2**64), "9" * 40):
        code, _, err = run_cli(capsys, *base, "-q", "red", "-k", k)  # a usage error
        assert code == 2 and f"Invalid value for '-k': {k} is not in the range 1<=x<={MAX_K}" \
            in err.splitlines()[-1], err
    code, _, err = run_cli(capsys, *base, "-q", "x" * (MAX_QUERY_CHARS + 1))
    assert code == 2
    one_line_error(err, f"query 1 has {MAX_QUERY_CHARS + 1} characters; at most")
    t0 = time.monotonic()
    code, _, err = run_cli(capsys, *base, "--queries-file", "/dev/zero")
    assert code == 2 and time.monotonic() - t0 < 10
    one_line_error(err, "/dev/zero: queries file larger than", "MiB")
    many = tmp_path / "many.txt"
    many.write_text("q\n" * 100_001)
    code, _, err = run_cli(capsys, *base, "--queries-file", str(many))
    assert code == 2
    one_line_error(err, "100001 queries, at most 100000")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    code, _, err = run_cli(capsys, *base, "--queries-file", str(binary))
    assert code == 2
    one_line_error(err, "bin.txt: queries file is not UTF-8 text (byte 3)")
    assert MAX_QUERIES_FILE_BYTES == 16 << 20  # the README states it
    for seconds in ("nan", "1e-9", "inf"):  # a window count without bound, before any work
        code, _, err = run_cli(capsys, "index", str(tmp_path), "--bundle", str(bundle.dir),
                               "--index", str(tmp_path / "new"), "--segment-seconds", seconds)
        assert code == 2 and not (tmp_path / "new").exists()
        one_line_error(err, "segment")
    assert answers(built, bundle) == before


# --- 6: the bundle is verified -------------------------------------------------------------

def test_swapped_graph_is_refused_and_verdicts_are_cached(
        built: Path, bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from pig.engine import bundle as bundle_mod

    before = answers(built, bundle)
    copy = tmp_path / "b"
    shutil.copytree(bundle.dir, copy)
    other = write_bundle(tmp_path / "other", SIZES, seed=1)
    shutil.copy(other / "text.onnx", copy / "text.onnx")  # another model's graph, same name
    code, _, err = run_cli(capsys, "search", "-q", "red", "--index", str(built), "--bundle",
                           str(copy))
    assert code == 2
    one_line_error(err, f"{copy}/text.onnx: sha256 differs from the manifest")

    # a verdict is cached by the file's identity: a second open does not hash again
    shutil.copy(bundle.dir / "text.onnx", copy / "text.onnx")
    b = Bundle.load(copy)
    b.graph_path("text", "fp32")
    bundle_mod._VERIFIED.clear()  # as a new process: the verdict file is enough

    def no_hash(path: Any) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(bundle_mod, "sha256_file", no_hash)
    b.graph_path("text", "fp32")
    monkeypatch.undo()
    with open(copy / "text.onnx", "r+b") as f:  # same size, new content: ctime changes
        f.seek(100)
        f.write(b"\0")
    with pytest.raises(bundle_mod.BundleError, match="sha256 differs"):
        b.graph_path("text", "fp32")
    # a cache that cannot be written costs a hash, nothing else
    monkeypatch.setenv("PIG_ENGINE_CACHE", "/proc/no-such-cache")
    bundle_mod._VERIFIED.clear()
    Bundle.load(bundle.dir).graph_path("text", "fp32")
    assert answers(built, bundle) == before


@pytest.mark.parametrize("file", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx",
                                  "link.onnx", 7, None, ["video.onnx"], ""])
def test_graph_file_must_lie_inside_the_bundle(tmp_path: Path, file: Any) -> None:
    from pig.errors import BundleError

    root = write_bundle(tmp_path / "b", SIZES)
    (tmp_path / "outside.onnx").write_bytes((root / "video.onnx").read_bytes())
    (root / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    edit_manifest(root, lambda m: m["graphs"]["video"]["fp32"].update(file=file))
    with pytest.raises(BundleError, match=r"graphs\.video\.fp32\.file .*(leaves|outside|"
                                          r"string)") as err:
        Bundle.load(root)
    assert "\n" not in str(err.value)


def edit_manifest(root: Path, edit: Any) -> None:
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


# --- 7: weights that cannot retrieve --------------------------------------------------------

@pytest.mark.parametrize("poison", ["nan", "inf", "huge"])
def test_broken_weights_are_refused_by_name(tiny_model: Any, tmp_path: Path, poison: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from pig.cli.export import main

    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    name = "encoder.clipmodel.vision_model.encoder.layers.0.mlp.fc1.weight"
    if poison == "huge":
        sd = {k: v * 1e30 if v.is_floating_point() else v for k, v in sd.items()}
    else:
        sd[name][0, 0] = float(poison)
    torch.save(sd, tmp_path / "ckpt.pt")
    (tmp_path / "args.json").write_text(json.dumps(tiny_model.cfg.to_dict()))
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as stop:
        main(["--onnx", "--checkpoint", str(tmp_path / "ckpt.pt"), "--config",
              str(tmp_path / "args.json"), "--out", str(out)])
    _, err = capsys.readouterr()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    if poison == "huge":
        assert "embeddings of the sample inputs are not finite" in err or "same vector" in err
    else:
        assert f"non-finite weights (NaN or Inf) in {name}" in err
    assert not out.exists()  # nothing half-written


def test_degenerate_outputs_are_refused() -> None:
    import torch

    from pig.export.onnx_export import ExportError, check_sample_outputs

    e = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    check_sample_outputs({"video": e})
    with pytest.raises(ExportError, match="all the same vector"):
        check_sample_outputs({"video": e[:1].repeat(3, 1)})
    with pytest.raises(ExportError, match="not finite"):
        check_sample_outputs({"text": e * float("nan")})


# --- 8: hostile manifest fields and checkpoints: one line, exit 2 ----------------------------

HOSTILE_BUNDLE = {
    "file not a string": lambda m: m["graphs"]["text"]["fp32"].update(file={"a": 1}),
    "size huge": lambda m: m["preprocess"].update(size=10**30),
    "size negative": lambda m: m["preprocess"].update(size=-4),
    "num_frames 0": lambda m: m["preprocess"].update(num_frames=0),
    "std zero": lambda m: m["preprocess"].update(std=[0, 1, 1]),
    "max_length huge": lambda m: m["tokenizer"].update(max_length=2**40),
    "graphs a list": lambda m: m.update(graphs=[]),
    "dim a string": lambda m: m.update(embedding_dim="512"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BUNDLE))
def test_hostile_bundle_manifest_is_one_line(built: Path, tmp_path: Path, case: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from pig.engine.bundle import fingerprint

    root = write_bundle(tmp_path / "b", SIZES)

    def edit(m: dict[str, Any]) -> None:
        HOSTILE_BUNDLE[case](m)
        with contextlib.suppress(KeyError, TypeError):  # a forger recomputes the fingerprint
            m["fingerprint"] = fingerprint(m)

    edit_manifest(root, edit)
    make_clips(tmp_path / "clips", n=1)
    code, _, err = run_cli(capsys, "index", str(tmp_path / "clips"), "--bundle", str(root),
                           "--index", str(tmp_path / "idx"))
    assert code == 2
    one_line_error(err, f"{root}/manifest.json: ")
    assert not (tmp_path / "idx").exists()


@pytest.fixture
def index_copy(built: Path, tmp_path: Path) -> Iterator[Path]:
    import shutil

    shutil.copytree(built, tmp_path / "idx")
    yield tmp_path / "idx"


@pytest.mark.parametrize("case", ["random bytes", "a list", "deep", "hnsw string",
                                  "hnsw float", "hnsw huge", "hnsw missing", "hnsw 1",
                                  "dim bool", "segment nan", "segment tiny", "segment string",
                                  "segmenting list"])
def test_hostile_index_manifest_is_one_line(index_copy: Path, built: Path, bundle: Bundle,
                                            case: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    path = index_copy / "manifest.json"
    good = path.read_bytes()
    m = json.loads(good)
    text = {
        "random bytes": np.random.default_rng(0).bytes(512),
        "a list": b"[1, 2]",
        "deep": b"[" * 100_000 + b"]" * 100_000,
    }.get(case)
    if text is None:
        edit = {"hnsw string": ("connectivity", "16"), "hnsw float": ("expansion_add", 1.5),
                "hnsw huge": ("expansion_search", 10**12), "hnsw missing": ("connectivity", None),
                "hnsw 1": ("connectivity", 1), "segment nan": ("seconds", float("nan")),
                "segment tiny": ("stride", 1e-9), "segment string": ("seconds", "10")}
        if case == "dim bool":
            m["dim"] = True
        elif case == "segmenting list":
            m["segmenting"] = ["mode"]
        else:
            name, value = edit[case]
            m["segmenting" if case.startswith("segment ") else "usearch"][name] = value
        text = json.dumps(m).encode()
    path.write_bytes(text)
    for argv in (["info"], ["search", "-q", "red"], ["remove", "/x.mp4"]):
        code, _, err = run_cli(capsys, *argv, "--index", str(index_copy))
        assert code == 3  # a damaged index file: a fault of the environment
        one_line_error(err, f"{path}: invalid index manifest")
    path.write_bytes(good)  # nothing else was touched: the index answers as before
    assert [s for _, s in answers(index_copy, bundle)] == [s for _, s in answers(built, bundle)]


def test_zero_dim_tensor_checkpoint_is_one_line(tiny_model: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from pig.cli.export import main

    sd = dict(tiny_model.state_dict())
    sd["encoder.clipmodel.visual_projection.weight"] = torch.tensor(1.0)
    torch.save(sd, tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit) as stop:
        main(["--onnx", "--checkpoint", str(tmp_path / "ckpt.pt"), "--out",
              str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("pig-export: error: ") and "Traceback" not in err


# --- 11: what a walk passes over is recorded ------------------------------------------------

def test_fifos_sockets_and_loops_are_listed_as_skipped(
        bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = tmp_path / "clips"
    make_clips(clips, n=2)
    os.mkfifo(clips / "pipe.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(clips / "sock.mp4"))
    (clips / "loop").symlink_to(clips / "loop")
    (clips / "gone.mp4").symlink_to(tmp_path / "nowhere")
    idx = tmp_path / "idx"
    args = ["index", str(clips), "--bundle", str(bundle.dir), "--index", str(idx)]
    try:
        code, out, err = run_cli(capsys, *args)
    finally:
        sock.close()
    assert code == 1, err
    reasons = {"gone.mp4": "broken symlink (No such file or directory)",
               "loop": "symlink loop", "pipe.mp4": "a FIFO, not a regular file",
               "sock.mp4": "a socket, not a regular file"}
    for name, why in reasons.items():
        assert f"skipped: {clips / name}: {why}" in out
    assert out.splitlines()[0].startswith("2 files: 2 indexed")
    code, out, _ = run_cli(capsys, "info", "--index", str(idx), "--json")
    assert {(s["path"], s["reason"]) for s in json.loads(out)["skipped"]} == {
        (str(clips / n), why) for n, why in reasons.items()}
    code, out, _ = run_cli(capsys, "info", "--index", str(idx))
    assert f"skipped     {clips / 'pipe.mp4'}: a FIFO, not a regular file" in out
    for name in reasons:
        (clips / name).unlink()
    code, out, _ = run_cli(capsys, *args)  # fixed: the list is cleared, nothing re-embedded
    assert code == 0 and out.startswith("2 files: 0 indexed")
    code, out, _ = run_cli(capsys, "info", "--index", str(idx), "--json")
    assert json.loads(out)["skipped"] == []
    assert counts(idx) == {"vectors": 2, "indexed": 2, "failed": 0}

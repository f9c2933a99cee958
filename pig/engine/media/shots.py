"""Shot boundaries for ``--segments shots``: PySceneDetect's ContentDetector, PyAV backend.

PySceneDetect (``scenedetect``, the ``shots`` extra) decodes the file itself, downscaled, and
reports where each shot starts; :mod:`pig.engine.media.segments` then merges shots shorter than
``shot_min`` and cuts long ones into windows, and :mod:`pig.engine.media.video` samples them in its
own single pass. Defaults are PySceneDetect's: ``ContentDetector(threshold=27)`` (HSV content
change between consecutive frames), minimum shot length 15 frames, automatic downscaling.
"""

from __future__ import annotations

from pathlib import Path

from pig.errors import PigError, VideoReadError

THRESHOLD = 27.0  # ContentDetector's default


def require() -> None:
    """Refuse ``--segments shots`` in one line, before any work, without PySceneDetect."""
    try:
        import scenedetect  # noqa: F401
    except ImportError:
        raise PigError("--segments shots needs PySceneDetect: pip install "
                       "'pig-engine[shots]'") from None


def detect_cuts(path: Path, frame_count: int, source: str) -> list[int]:
    """Frame numbers (presentation order) at which a new shot starts, excluding 0; ``source``
    is the name to open (the descriptor :mod:`pig.engine.media.video` checked), ``path`` names the
    file in errors."""
    require()
    from scenedetect import ContentDetector, SceneManager, open_video

    try:
        video = open_video(source, backend="pyav")
        manager = SceneManager()
        manager.auto_downscale = True
        manager.add_detector(ContentDetector(threshold=THRESHOLD))
        manager.detect_scenes(video, show_progress=False)
        scenes = manager.get_scene_list()
    except Exception as exc:  # PySceneDetect raises a variety of decoder errors
        raise VideoReadError(path, f"shot detection failed ({type(exc).__name__}: {exc})") from exc
    return sorted({int(start.frame_num) for start, _ in scenes} - {0} & set(range(frame_count)))

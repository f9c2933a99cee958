"""``/v1/videos/{id}/media`` of a video indexed from a URL (``s3://``, ``gs://``, ``https://``):
proxied with single-range support, or a redirect to a presigned URL (``--media-redirect``)."""

from __future__ import annotations

import mimetypes
import re

from fastapi import HTTPException
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from pig.engine.index import FileRecord
from pig.engine.media import sources
from pig.errors import EnvironmentFault

REDIRECT_SECONDS = 3600  # how long a presigned media URL stays valid
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def object_media(record: FileRecord, range_header: str | None, redirect: bool) -> Response:
    """The object of ``record`` while it is the one indexed (same size and ETag), else 410."""
    try:
        st = sources.stat(record.path)
    except OSError as exc:
        raise EnvironmentFault(f"{record.path}: cannot reach the object ({exc})") from None
    if st is None or not sources.same((record.size, record.mtime_ns, record.etag), st):
        raise HTTPException(410, f"video {record.key}: the object is missing or changed since "
                            "it was indexed")
    if redirect:
        try:
            return RedirectResponse(sources.media_url(record.path, REDIRECT_SECONDS), 307)
        except OSError as exc:
            raise EnvironmentFault(f"{record.path}: cannot sign a URL ({exc.strerror})") from None
    media_type = mimetypes.guess_type(record.path)[0] or "application/octet-stream"
    start, end, status = _span(range_header, st.size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.size}"
    return StreamingResponse(sources.read_range(record.path, start, end), status,
                             headers=headers, media_type=media_type)


def _span(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end exclusive, status) of a single-range ``Range`` header (anything else: the
    whole object, 200, as HTTP allows); 416 outside the object."""
    m = _RANGE.fullmatch(header.strip()) if header else None
    if m is None or not (m.group(1) or m.group(2)):
        return 0, size, 200
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)) + 1, size) if m.group(2) else size
    else:  # the last N bytes
        start, end = max(0, size - int(m.group(2))), size
    if start >= size or end <= start:
        raise HTTPException(416, f"Range: outside the object's {size} bytes",
                            headers={"Content-Range": f"bytes */{size}"})
    return start, end, 206

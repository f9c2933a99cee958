"""``GET /v1/videos/{id}`` (a catalog record), ``/v1/videos/{id}/media`` (the file),
``/v1/videos/{id}/thumbnail`` (a segment's thumbnail), ``/v1/videos/{id}/preview`` (how a
browser plays a span) and ``/v1/videos/{id}/rendition.mp4`` (a remuxed or transcoded MP4,
:mod:`pig.engine.media.rendition`)."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import Header, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BeforeValidator
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from pig.engine.index import FileRecord
from pig.engine.index.catalog import SegmentRecord
from pig.engine.media import rendition, sources
from pig.engine.serve.errors import error
from pig.engine.serve.media import MediaFiles
from pig.engine.serve.models import ErrorResponse, Library, Preview, Segment, VideoRecord
from pig.engine.serve.object_media import object_media
from pig.engine.serve.routes import Context
from pig.errors import VideoReadError

MAX_ID = 2**63 - 1  # catalog ids are SQLite integers


def _digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written in decimal digits only")
    return value


Seconds = Annotated[float, Query(ge=0, le=1e7, allow_inf_nan=False,
                                  description="seconds from the file's first frame")]
VideoId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="catalog id (a hit's id)"),
                    BeforeValidator(_digits)]
SegmentOrdinal = Annotated[int, Query(ge=0, le=MAX_ID, description="the hit's segment"),
                          BeforeValidator(_digits)]
IndexPosition = Annotated[int | None, Query(
    ge=0, description="the hit's index field: position of its index in the --index list; "
    "required when several indexes are served, else 0"), BeforeValidator(_digits)]


class RangeFileResponse(FileResponse):
    """A FileResponse whose Range errors are JSON like every other error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ranges = Headers(scope=scope).get("range")
        if ranges is not None and self.stat_result is not None:
            try:
                self._parse_range_header(ranges, self.stat_result.st_size)
            except MalformedRangeHeader as exc:
                await error(400, f"Range: {exc.content}")(scope, receive, send)
                return
            except RangeNotSatisfiable as exc:
                await error(416, f"Range: outside the file's {exc.max_size} bytes",
                            headers={"Content-Range": f"bytes */{exc.max_size}"})(
                    scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class MediaResponse(RangeFileResponse):
    """The file of a catalog record, sent from the descriptor that was checked (so a file
    swapped in after the check is never sent); 410 if it is not the file that was indexed."""

    def __init__(self, files: MediaFiles, record: FileRecord) -> None:
        media_type = mimetypes.guess_type(record.path)[0] or "application/octet-stream"
        super().__init__(record.path, media_type=media_type)
        self.files, self.record = files, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opening = self.files.open(self.record)
        opened = await anyio.to_thread.run_sync(opening.__enter__)  # may hash the file
        try:
            if opened is None:
                await error(410, f"video {self.record.key}: the file is missing or "
                            "changed since it was indexed (size, mtime or content)")(
                    scope, receive, send)
                return
            self.path, self.stat_result = opened
            self.set_stat_headers(self.stat_result)
            await super().__call__(scope, receive, send)
        finally:
            opening.__exit__(None, None, None)


def register(ctx: Context) -> None:
    service, api = ctx.service, ctx.api

    def indexed(video_id: int, index: int | None
                ) -> tuple[int, FileRecord, list[SegmentRecord]]:
        """(index position, record, segments) of ``video_id`` in the index ``?index=`` names:
        400 without one when several are served (never a guess), 404 outside the list."""
        served = len(service.index_dirs)
        if index is None:
            if served > 1:
                raise HTTPException(400, "several indexes are served: give ?index=N (the "
                                    "hit's index field)")
            index = 0
        if index >= served:
            raise HTTPException(404, f"no index {index}: this server serves {served} "
                                f"(?index=0..{served - 1})")
        found = service.video(index, video_id)
        if found is None:
            where = f" in index {index}" if served > 1 else ""
            raise HTTPException(404, f"no indexed video with id {video_id}{where}")
        rec, segments = found
        return index, rec, segments

    @api.get("/v1/videos/{video_id}", response_model=VideoRecord, tags=["videos"])
    def video(video_id: VideoId, index: IndexPosition = None) -> VideoRecord:
        """A video's catalog record and its segments."""
        index, rec, segments = indexed(video_id, index)
        return VideoRecord(id=rec.key, index=index, path=rec.path, size=rec.size,
                           mtime_ns=rec.mtime_ns, frames=rec.frames, digest=rec.digest,
                           duration_s=segments[-1].end_s if segments else None,
                           segments=[Segment(segment=g.ordinal, start_s=g.start_s,
                                             end_s=g.end_s) for g in segments],
                           media=f"/v1/videos/{rec.key}/media?index={index}")

    @api.api_route("/v1/videos/{video_id}/media", methods=["GET", "HEAD"],
                   response_class=FileResponse, tags=["videos"],
                   responses={200: {"content": {"video/*": {}}}, 206: {"description": "a Range"},
                              410: {"model": ErrorResponse}, 416: {"model": ErrorResponse}})
    def media(video_id: VideoId, index: IndexPosition = None,
              range_header: Annotated[str | None, Header(alias="range")] = None) -> Response:
        """The indexed file itself (GET, or HEAD for its headers), with HTTP Range support;
        only files in the catalog, and only while the opened file is the one that was
        indexed (same size, and same content digest, checked once per file identity), else
        410. An object (s3://, https://) is proxied, or redirected to a presigned URL when
        the server runs with --media-redirect."""
        rec = indexed(video_id, index)[1]
        if sources.is_url(rec.path):
            return object_media(rec, range_header, service.options.media_redirect)
        return MediaResponse(service.media, rec)

    @api.get("/v1/videos/{video_id}/thumbnail", response_class=Response, tags=["videos"],
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}})
    def thumbnail(video_id: VideoId, segment: SegmentOrdinal = 0,
                  index: IndexPosition = None) -> Response:
        """The small JPEG kept at index time for a segment of an indexed video (404 when the
        segment has none: indexed before thumbnails were kept)."""
        position, rec, _ = indexed(video_id, index)
        image = service.thumbnail(position, rec.key, segment)
        if image is None:
            raise HTTPException(404, f"video {video_id}: no thumbnail of segment {segment}")
        return Response(image, media_type="image/jpeg")

    @api.get("/v1/library", response_model=Library, tags=["videos"])
    def library() -> Library:
        """What is indexed: files, segments, total duration, the most common extensions,
        codecs and folders (what the search page shows before a search)."""
        return Library(**service.library())

    def indexed_file(video_id: int, index: int | None) -> tuple[int, Path | None]:
        """(index position, local file); the file is None for an object (s3://, https://),
        which is played as it is."""
        index, rec, _ = indexed(video_id, index)
        if sources.is_url(rec.path):
            return index, None
        with service.media.open(rec) as opened:  # the file that was indexed (may hash it)
            if opened is None:
                raise HTTPException(410, f"video {video_id}: the file is missing or changed "
                                    "since it was indexed (size, mtime or content)")
        return index, Path(rec.path)

    @api.get("/v1/videos/{video_id}/preview", response_model=Preview, tags=["videos"],
             responses={410: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    def preview(video_id: VideoId, index: IndexPosition = None, start: Seconds = 0.0,
                end: Seconds = 0.0) -> Preview:
        """How the page plays the span ``[start, end)`` (seconds from the first frame, the
        index's time base) in a browser: the file itself, an MP4 copy, or an H.264
        transcode of the span; ``offset_s`` is the span time at the rendition's 0 s."""
        index, path = indexed_file(video_id, index)
        base = f"/v1/videos/{video_id}"
        if path is None:
            return Preview(kind="original", reason="an object: played as it is", offset_s=0.0,
                           url=f"{base}/media?index={index}")
        try:
            r = rendition.choose(path)
        except VideoReadError as err:
            raise HTTPException(422, f"video {video_id} cannot be previewed: "
                                f"{err.reason}") from None
        if r.kind == "original":
            return Preview(kind=r.kind, reason=r.reason, offset_s=0.0,
                           url=f"{base}/media?index={index}")
        query = f"index={index}&kind={r.kind}"
        offset = 0.0
        if r.kind == "transcode":
            offset = start
            query += f"&start={start:g}&end={end:g}"
        return Preview(kind=r.kind, reason=r.reason, offset_s=offset,
                       url=f"{base}/rendition.mp4?{query}")

    @api.get("/v1/videos/{video_id}/rendition.mp4", response_class=FileResponse,
             tags=["videos"], responses={200: {"content": {"video/mp4": {}}},
                                         410: {"model": ErrorResponse},
                                         422: {"model": ErrorResponse},
                                         503: {"model": ErrorResponse}})
    def rendition_mp4(video_id: VideoId, kind: Literal["remux", "transcode"],
                      index: IndexPosition = None, start: Seconds = 0.0,
                      end: Seconds = 0.0) -> Response:
        """A browser-playable MP4 of the file (``remux``) or of its span (``transcode``,
        at most two minutes), made once and cached; one is made at a time (503 while busy)."""
        _, path = indexed_file(video_id, index)
        if path is None:
            raise HTTPException(422, f"video {video_id} is an object: it is played as it is")
        try:
            out = rendition.rendition_file(path, kind, start, end)
        except VideoReadError as err:
            raise HTTPException(422, f"video {video_id} cannot be previewed: "
                                f"{err.reason}") from None
        return RangeFileResponse(out, media_type="video/mp4", stat_result=out.stat())

"""``GET /v1/videos/{id}`` (a catalog record) and ``/v1/videos/{id}/media`` (the file)."""

from __future__ import annotations

import mimetypes
from typing import Annotated

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
from pig.engine.media import sources
from pig.engine.serve.errors import error
from pig.engine.serve.media import MediaFiles
from pig.engine.serve.models import ErrorResponse, Segment, VideoRecord
from pig.engine.serve.object_media import object_media
from pig.engine.serve.routes import Context

MAX_ID = 2**63 - 1  # catalog ids are SQLite integers


def _digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written in decimal digits only")
    return value


VideoId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="catalog id (a hit's id)"),
                    BeforeValidator(_digits)]
IndexPosition = Annotated[int | None, Query(
    ge=0, description="the hit's index field: position of its index in the --index list; "
    "required when several indexes are served, else 0"), BeforeValidator(_digits)]


class MediaResponse(FileResponse):
    """The file of a catalog record, sent from the descriptor that was checked (so a file
    swapped in after the check is never sent); 410 if it is not the file that was indexed.
    Range errors are JSON like every other error."""

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
            st = self.stat_result
            self.set_stat_headers(st)
            ranges = Headers(scope=scope).get("range")
            if ranges is not None:
                try:
                    self._parse_range_header(ranges, st.st_size)
                except MalformedRangeHeader as exc:
                    await error(400, f"Range: {exc.content}")(scope, receive, send)
                    return
                except RangeNotSatisfiable as exc:
                    await error(416, f"Range: outside the file's {exc.max_size} bytes",
                                headers={"Content-Range": f"bytes */{exc.max_size}"})(
                        scope, receive, send)
                    return
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

"""``POST /v1/search``: a hot route (``/v1/embeddings`` is in :mod:`.openai`)."""

from __future__ import annotations

from fastapi import Depends
from fastapi.responses import Response

from pig.engine.query.search import answer_json
from pig.engine.serve.errors import Json, require_json
from pig.engine.serve.models import ErrorResponse, SearchRequest, SearchResponse
from pig.engine.serve.routes import Context
from pig.engine.serve.service import Found


def register(ctx: Context) -> None:
    service, api, lane = ctx.service, ctx.api, ctx.lane

    @api.post("/v1/search", response_model=SearchResponse, tags=["search"],
              dependencies=[Depends(require_json)], responses={415: {"model": ErrorResponse}})
    @lane.hot
    async def search(req: SearchRequest) -> Response:
        """Top ``k`` videos per query, the same hits as ``pig-engine search --json``."""
        requests = req.requests()
        found = await service.submit(requests)
        if not isinstance(found, Found):
            raise TypeError(f"a search job answered {type(found).__name__}")
        return Json({"generation": found.generations[0], "generations": found.generations,
                     "results": [answer_json(r, a) for r, a in
                                 zip(requests, found.answers, strict=True)]})

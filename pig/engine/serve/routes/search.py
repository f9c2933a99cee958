"""``POST /v1/search`` and ``POST /v1/embeddings``: the hot routes."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import Response

from pig.engine.query.search import hit_json
from pig.engine.serve.errors import Json
from pig.engine.serve.models import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    SearchRequest,
    SearchResponse,
)
from pig.engine.serve.routes import Context
from pig.engine.serve.service import Encoded, Found, Job


def register(ctx: Context) -> None:
    service, api, lane = ctx.service, ctx.api, ctx.lane

    @api.post("/v1/search", response_model=SearchResponse, tags=["search"])
    @lane.hot
    async def search(req: SearchRequest) -> Response:
        """Top ``k`` videos per query, the same hits as ``pig-engine search --json``."""
        texts = req.texts()
        found = await service.submit(Job(texts, req.k, req.exact, req.group_by))
        if not isinstance(found, Found):
            raise TypeError(f"a search job answered {type(found).__name__}")
        results = [{"query": text, "truncated": cut,
                    "results": [hit_json(r, h) for r, h in enumerate(hits, 1)]}
                   for text, hits, cut in zip(texts, found.hits, found.truncated, strict=True)]
        return Json({"generation": found.generations[0], "generations": found.generations,
                     "results": results})

    @api.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["search"])
    @lane.hot
    async def embeddings(req: EmbeddingsRequest) -> Response:
        """Unit text vectors (OpenAI-style); ``model`` is the bundle fingerprint."""
        if req.model is not None and req.model != service.model:
            raise HTTPException(404, f"model {req.model!r} is not served here "
                                f"(this server serves {service.model})")
        enc = await service.submit(Job(list(req.input)))
        if not isinstance(enc, Encoded):
            raise TypeError(f"an embeddings job answered {type(enc).__name__}")
        data = [{"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(enc.vectors.tolist())]
        n = sum(enc.tokens)
        return Json({"object": "list", "data": data, "model": service.model,
                     "usage": {"prompt_tokens": n, "total_tokens": n}})

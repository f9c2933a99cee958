"""The OpenAI-compatible routes: ``POST /v1/embeddings`` (a hot route) and ``GET /v1/models``.

The official ``openai`` SDK works against them unmodified (``base_url=<server>/v1``): it asks
for base64 vectors by default, names a model, and reads errors as OpenAI's error shape
(:mod:`pig.engine.serve.errors`). The served model is listed under a readable name
(``--model-name``; default: the bundle folder's name) and its bundle fingerprint is accepted
as an alias. ``dimensions`` other than the model's is refused: PIG's vectors are not trained
to be truncated (no Matryoshka objective), so a cut and renormalised vector would not
score against the index's full-length video vectors.
"""

from __future__ import annotations

import base64

from fastapi import Depends
from fastapi import Path as PathParam
from fastapi.responses import Response

from pig.engine.serve.errors import ApiError, Json, require_json
from pig.engine.serve.models import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from pig.engine.serve.routes import Context
from pig.engine.serve.service import Encoded, Service


def card(service: Service) -> ModelCard:
    return ModelCard(id=service.model_name, created=service.model_created,
                     fingerprint=service.model, dimensions=service.dim)


def check_model(service: Service, name: str | None) -> None:
    """404 (``model_not_found``) unless ``name`` is the served model's name or fingerprint."""
    if name is not None and name not in (service.model_name, service.model):
        raise ApiError(404, f"model {name!r} is not served here: this server serves "
                       f"{service.model_name!r} (GET /v1/models)", param="model",
                       code="model_not_found")


def register(ctx: Context) -> None:
    service, api, lane = ctx.service, ctx.api, ctx.lane

    @api.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["openai"],
              dependencies=[Depends(require_json)], responses={415: {"model": ErrorResponse}})
    @lane.hot
    async def embeddings(req: EmbeddingsRequest) -> Response:
        """Unit text vectors, as OpenAI's embeddings API answers."""
        check_model(service, req.model)
        if req.dimensions is not None and req.dimensions != service.dim:
            raise ApiError(400, f"dimensions {req.dimensions}: this model's vectors have "
                           f"{service.dim} dimensions and are not trained to be truncated; "
                           f"omit dimensions (or give {service.dim})", param="dimensions",
                           code="unsupported_dimensions")
        enc = await service.submit(list(req.input))
        if not isinstance(enc, Encoded):
            raise TypeError(f"an embeddings job answered {type(enc).__name__}")
        if req.encoding_format == "base64":
            vectors: list[object] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")
                                     for v in enc.vectors]
        else:
            vectors = enc.vectors.tolist()
        data = [{"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(vectors)]
        n = sum(enc.tokens)
        return Json({"object": "list", "data": data, "model": service.model_name,
                     "usage": {"prompt_tokens": n, "total_tokens": n}})

    @api.get("/v1/models", response_model=ModelList, tags=["openai"])
    def models() -> ModelList:
        """The served model (one per server)."""
        return ModelList(data=[card(service)])

    @api.get("/v1/models/{model}", response_model=ModelCard, tags=["openai"])
    def model(model: str = PathParam(max_length=256, description="its name or fingerprint")
              ) -> ModelCard:
        """The served model, by name or fingerprint; 404 for any other."""
        check_model(service, model)
        return card(service)

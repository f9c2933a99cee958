"""Request and response schemas of the service (they are its OpenAPI document).

Requests are strict (no type coercion, no unknown fields); their limits come from
:mod:`pig.engine.limits`, the ones the CLI enforces too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pig.engine.index.store import GROUP_BY
from pig.engine.limits import MAX_K, MAX_QUERIES_PER_REQUEST, MAX_QUERY_CHARS


def _check_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"is not valid Unicode ({err.reason} at {err.start})") from None
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS),
                 AfterValidator(_check_text)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_QUERIES_PER_REQUEST)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Request):
    """One ``query`` or a list of ``queries`` (exactly one of the two)."""

    query: Text | None = None
    queries: Texts | None = None
    k: int = Field(10, ge=1, le=MAX_K, description="hits per query")
    exact: bool | None = Field(
        None, description="true: brute-force scan; false: HNSW; null: scan up to 10k vectors")
    group_by: Literal[GROUP_BY] = Field(  # type: ignore[valid-type]
        "video", description="video: one hit per file (its best segment); segment: raw segments")

    @model_validator(mode="after")
    def _one_form(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' and 'queries'")
        return self

    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class SearchHit(BaseModel):
    """A hit, as ``pig-engine search --json`` prints it."""

    rank: int
    score: float = Field(description="inner product of the unit query and video vectors")
    path: str
    id: int = Field(description="the video's catalog id, unique within its index "
                    "(GET /v1/videos/{id}?index={index})")
    start_s: float = Field(description="the segment's start, seconds from the first frame")
    end_s: float | None = Field(description="the segment's end (null: unknown)")
    segment: int = Field(description="the segment's ordinal within the file")
    index: int = Field(description="position of the hit's index in the served --index list "
                       "(from 0; 0 with one index)")


class QueryResult(BaseModel):
    query: str
    truncated: bool = Field(description="longer than the model's text length: only its "
                            "beginning was searched")
    results: list[SearchHit]


class SearchResponse(BaseModel):
    generation: int = Field(description="the generation of the first index that answered "
                            "(the only one unless several are served; see generations)")
    generations: list[int] = Field(description="the generation of each index that answered, "
                                   "in --index order (a hit's index field is a position here)")
    results: list[QueryResult] = Field(description="one entry per query, in request order")


class EmbeddingsRequest(_Request):
    """OpenAI's embeddings request: ``input`` is one text or a list of texts."""

    input: Annotated[Texts, BeforeValidator(lambda v: [v] if isinstance(v, str) else v,
                                            json_schema_input_type=Text | Texts)]
    model: str | None = Field(None, description="the served model: its name (GET /v1/models) "
                              "or its bundle fingerprint")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each vector as little-endian float32 bytes, base64 "
        "(what the OpenAI SDK asks for by default)")
    dimensions: int | None = Field(None, ge=1, description="must equal the model's dimension "
                                   "if given: its vectors are not trained to be truncated")
    user: str | None = Field(None, max_length=256, description="accepted and ignored (OpenAI)")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of float32 bytes")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str = Field(description="the served model's name")
    usage: Usage


class ModelCard(BaseModel):
    """A served model, as OpenAI's ``GET /v1/models`` lists one."""

    id: str = Field(description="its name (--model-name; default: the bundle's folder name)")
    object: Literal["model"] = "model"
    created: int = Field(description="when its bundle was exported (Unix seconds)")
    owned_by: str = "pig-engine"
    fingerprint: str = Field(description="the bundle fingerprint, accepted as an alias of id")
    dimensions: int = Field(description="length of its vectors")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Segment(BaseModel):
    segment: int
    start_s: float
    end_s: float | None


class VideoRecord(BaseModel):
    """A video's catalog record."""

    id: int
    index: int = Field(description="position of the video's index in the --index list")
    path: str
    size: int | None
    mtime_ns: int | None
    frames: int | None
    digest: str | None
    duration_s: float | None = Field(description="end of the last segment (null: unknown)")
    segments: list[Segment] = Field(description="in time order")
    media: str = Field(description="URL of the file itself (HTTP Range supported)")


class OutOfService(BaseModel):
    index: int = Field(description="its position in the --index list")
    path: str
    reason: str = Field(description="one line naming the file and the cause")


class Health(BaseModel):
    status: Literal["live", "ready", "degraded", "draining"]
    generation: int | None = Field(None, description="the first index's generation (see "
                                   "pig_index_generation for each)")
    vectors: int | None = Field(None, description="vectors in all served indexes")
    model: str | None = None
    out_of_service: list[OutOfService] | None = Field(
        None, description="indexes taken out of service (status degraded): their searches "
        "get 503 naming them, the other routes serve on")


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None
    param: str | None = Field(None, description="OpenAI routes: the request field at fault")
    code: str | None = Field(None, description="OpenAI routes: a machine-readable code")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorBody

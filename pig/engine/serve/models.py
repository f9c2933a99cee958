"""Request and response schemas of the service (they are its OpenAPI document).

Requests are strict (no type coercion, no unknown fields); their limits come from
:mod:`pig.engine.limits`, the ones the CLI enforces too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pig.engine.index.store import GROUP_BY
from pig.engine.limits import (
    MAX_K,
    MAX_MOMENTS,
    MAX_OFFSET,
    MAX_QUERIES_PER_REQUEST,
    MAX_QUERY_CHARS,
    MAX_TERMS,
)
from pig.engine.query.filters import parse_json
from pig.engine.query.request import Example, Request, Term


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


class Like(_Request):
    """An example: an indexed video (``id``, optionally one ``segment``, and its ``index``
    among the served ones) or a file ``path`` the catalog holds."""

    id: int | None = Field(None, ge=1, le=2**63 - 1, description="a hit's id")
    segment: int | None = Field(None, ge=0, description="a hit's segment (null: the whole "
                                "file: the mean of its segments)")
    index: int = Field(0, ge=0, description="a hit's index")
    path: str | None = Field(None, max_length=4096,
                             description="an indexed file (other files are refused here)")

    @model_validator(mode="after")
    def _one_form(self) -> Like:
        if (self.id is None) == (self.path is None):
            raise ValueError("give exactly one of 'id' and 'path'")
        return self

    def example(self) -> Example:
        return Example(id=self.id, segment=self.segment, index=self.index, path=self.path)


class WeightedTerm(_Request):
    """A term of a combined query: a ``text`` or a ``like`` example, with a ``weight``."""

    text: Text | None = None
    like: Like | None = None
    weight: float = Field(1.0, gt=0, lt=1e6, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_form(self) -> WeightedTerm:
        if (self.text is None) == (self.like is None):
            raise ValueError("give exactly one of 'text' and 'like'")
        return self

    def term(self) -> Term:
        return Term(text=self.text, like=None if self.like is None else self.like.example(),
                    weight=self.weight)


class SearchRequest(_Request):
    """Queries: each of ``query``/``queries`` and each ``like`` example is its own query;
    or ``terms``, one query combining weighted texts and examples. ``not`` is subtracted
    from every query; ``filter`` restricts them (see docs/search.md)."""

    query: Text | None = None
    queries: Texts | None = None
    like: Like | Annotated[list[Like], Field(min_length=1, max_length=MAX_TERMS)] | None = None
    terms: Annotated[list[WeightedTerm], Field(min_length=1, max_length=MAX_TERMS)] | None = None
    not_: Annotated[list[Text | WeightedTerm], Field(max_length=MAX_TERMS)] = Field(
        [], alias="not", description="texts (or weighted terms) subtracted from every query")
    filter: dict[str, Any] | None = Field(
        None, description='e.g. {"duration_s": {"gte": 60}, "path": {"glob": "/cams/*"}}')
    k: int = Field(10, ge=1, le=MAX_K, description="hits per query (per page)")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="hits to skip (a page's next)")
    min_score: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False,
                                    description="drop hits scoring below")
    exact: bool | None = Field(
        None, description="true: brute-force scan; false: HNSW; null: scan up to 10k vectors")
    group_by: Literal[GROUP_BY] = Field(  # type: ignore[valid-type]  # a tuple of literals
        "video", description="video: one hit per file (its best segment); segment: raw segments")
    moments: int = Field(1, ge=1, le=MAX_MOMENTS, description="group_by video: each file's "
                         "N best segments (scored exactly)")
    merge_adjacent: bool = Field(False, description="adjacent segments among the moments "
                                 "become one span")

    @model_validator(mode="after")
    def _one_form(self) -> SearchRequest:
        if self.query is not None and self.queries is not None:
            raise ValueError("give exactly one of 'query' and 'queries'")
        given = self.query is not None or self.queries is not None or self.like is not None
        if given == (self.terms is not None):
            raise ValueError("give exactly one form: 'query', 'queries' and/or 'like', or else "
                             "'terms'")
        return self

    def requests(self) -> list[Request]:
        """The engine's requests (``filter`` parsed: an error in it is a PigError, 400)."""
        where = parse_json(self.filter)
        negatives = tuple(Term(text=n) if isinstance(n, str) else n.term() for n in self.not_)
        if self.terms is not None:
            groups: list[tuple[Term, ...]] = [tuple(t.term() for t in self.terms)]
        else:
            texts = [self.query] if self.query is not None else list(self.queries or [])
            likes = [self.like] if isinstance(self.like, Like) else list(self.like or [])
            groups = [(Term(text=t),) for t in texts]
            groups += [(Term(like=x.example()),) for x in likes]
        return [Request(terms, negatives, where, self.k, self.offset, self.min_score,
                        self.group_by, self.exact, self.moments, self.merge_adjacent)
                for terms in groups]


class MomentSpan(BaseModel):
    segments: list[int] = Field(description="the ordinals of its segments (several: merged)")
    start_s: float
    end_s: float | None
    score: float


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
    moments: list[MomentSpan] | None = Field(None, description="with moments or "
                                             "merge_adjacent: the file's best spans")


class QueryResult(BaseModel):
    query: str = Field(description="the query as read: texts, examples, weights, negatives")
    truncated: bool = Field(description="a text longer than the model's text length: only "
                            "its beginning was searched")
    results: list[SearchHit]
    next: int | None = Field(description="the offset of the next page (null: no more hits)")


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


class Library(BaseModel):
    """What the served indexes hold."""

    files: int = Field(description="indexed files")
    segments: int
    duration_s: float = Field(description="total duration of the files that know theirs")
    extensions: dict[str, int] = Field({}, description="files per extension (the top 20)")
    codecs: dict[str, int] = Field({}, description="files per video codec (the top 20)")
    folders: dict[str, int] = Field({}, description="files per folder (the top 20)")


class Preview(BaseModel):
    """How a browser plays a span of a video."""

    kind: Literal["original", "remux", "transcode"]
    reason: str
    url: str = Field(description="what the <video> element loads")
    offset_s: float = Field(description="span time (seconds from the first frame) at the "
                            "rendition's 0 s: seek to start_s - offset_s")


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

"""The HTTP shapes of the recommend API (pydantic, at the edge only: they document the responses).

Routes build their bodies with the domain's ``to_json`` and return them directly, so these models feed
the OpenAPI document without validating every response on the hot path.

Example::

    >>> split_values(["50,181", " 7 ", ""])
    ('50', '181', '7')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import QueryParams

from towerlight.errors import PayloadTooLargeError, ValidationError
from towerlight.recommend.strategies import HybridWeights

Strategy = Literal["auto", "two_tower", "popularity", "content", "hybrid"]
ServedStrategy = Literal["two_tower", "popularity", "content", "hybrid"]
MAX_K = 100  # items one page may hold
MAX_LIST_VALUES = 500  # exclude ids / categories in one request
MAX_RANK_ITEMS = 500  # items one POST /rank may order (more is a 413)
STRATEGY_HELP = (
    "auto: the best the model and the user allow (two_tower, else content, else popularity); "
    "hybrid: weighted sum of the others' normalised scores"
)
WEIGHTS_HELP = "hybrid weights, e.g. two_tower:0.6,content:0.25,popularity:0.15 (the default)"


class RecommendationsParams(BaseModel):
    """The query string of ``GET /recommendations/{user_id}``, validated in one pydantic call.

    FastAPI's own solving of ten declared query parameters cost about 0.12 ms a request (a third of the
    web layer's share); the route reads them here instead, and its OpenAPI parameters come from this model.
    """

    k: int = Field(default=10, ge=1, le=MAX_K, description="number of items")
    strategy: Strategy = Field(default="auto", description=STRATEGY_HELP)
    weights: str | None = Field(default=None, max_length=200, description=WEIGHTS_HELP)
    exclude_seen: bool = Field(default=True, description="leave out items the user interacted with")
    exclude: list[str] = Field(default=[], description="item ids (repeat or comma-separate)")
    category: list[str] = Field(default=[], description="only items in one of these categories")
    exclude_category: list[str] = Field(default=[], description="no items in these categories")
    strict: bool = Field(default=False, description="always exactly k items, back-filled")
    max_per_category: int | None = Field(
        default=None, ge=1, le=MAX_K, description="at most this many items of any one category"
    )
    explain: bool = Field(default=False, description="per item reasons: retrieval, ranker, rules")

    @classmethod
    def from_query(cls, query: QueryParams) -> RecommendationsParams:
        """The parameters of a query string: a list takes every value of its name, a scalar the last one, and
        unknown names are ignored, as FastAPI does. A ``RequestValidationError`` (the 422 contract) locates
        each problem at ``query.<name>``."""
        raw = {
            name: query.getlist(name) if name in _LIST_PARAMS else query[name]
            for name in cls.model_fields
            if name in query
        }
        try:
            return cls.model_validate(raw)
        except PydanticValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None

    @classmethod
    def openapi_parameters(cls) -> list[dict[str, object]]:
        """The OpenAPI ``parameters`` entries of these query parameters."""
        properties = cls.model_json_schema()["properties"]
        return [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": schema["description"]}
            for name, schema in properties.items()
        ]


_LIST_PARAMS = frozenset(name for name, f in RecommendationsParams.model_fields.items() if f.annotation == list[str])


class Because(BaseModel):
    item_id: str = Field(description="the user's recent item most similar to this one")
    similarity: float


class Retrieval(BaseModel):
    source: str = Field(description="the strategy that found the item; backfill; unknown (rank)")
    because: Because | None = None
    terms: list[str] | None = Field(default=None, description="content: the matching metadata terms")
    segment: str | None = Field(default=None, description="popularity: the demographic segment")
    components: dict[str, float] | None = Field(default=None, description="hybrid: normalised component scores")


class Contribution(BaseModel):
    feature: str
    contribution: float


class Reasons(BaseModel):
    retrieval: Retrieval
    ranker: list[Contribution] = Field(description="the ranker's strongest feature contributions (empty without)")
    rules: list[dict[str, object]] = Field(
        description="rules applied: promoted {boost}, pinned {position}, capped {skipped}, backfilled"
    )


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="the served strategy's score (hybrid: in [0, 1]); higher is better")
    rank: int = Field(ge=1)
    reasons: Reasons | None = Field(default=None, description="with explain=true only")


class RecommendationsResponse(BaseModel):
    user_id: str
    recommendation_id: str = Field(description="echo it in events (recommendation_id) to attribute them")
    model_version: str
    strategy: ServedStrategy = Field(description="the strategy that answered (auto resolved)")
    variant: str | None = Field(default=None, description="experiment variant (null without experiments)")
    items: list[RecommendedItem]


class RankRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    item_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, description=f"at most {MAX_RANK_ITEMS} item ids, in any order"
    )
    strategy: Strategy = Field(default="auto", description=STRATEGY_HELP)
    weights: str | None = Field(default=None, description=WEIGHTS_HELP)
    explain: bool = False


class RankedItem(RecommendedItem):
    score: float | None = Field(description="null for an item the model does not know (ranked last)")


class RankResponse(RecommendationsResponse):
    items: list[RankedItem]  # type: ignore[assignment]


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    items: list[RecommendedItem]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (404, "unknown route or item"),
        (413, f"more than {MAX_RANK_ITEMS} items to rank"),
        (422, "invalid parameters, unknown category, or strict=true with fewer than k items available"),
        (503, "no model is published yet"),
    )
}


def split_values(values: Iterable[str], *, name: str = "exclude") -> tuple[str, ...]:
    """Values of a repeated and/or comma-separated query parameter, stripped, empty ones dropped.

    >>> split_values(["Comedy,Drama", "Comedy"], name="category")
    ('Comedy', 'Drama')
    """
    out = tuple(dict.fromkeys(v for value in values for part in value.split(",") if (v := part.strip())))
    if len(out) > MAX_LIST_VALUES:
        raise ValidationError(
            f"{name} takes at most {MAX_LIST_VALUES} values, got {len(out)}",
            {"parameter": name, "limit": MAX_LIST_VALUES},
        )
    return out


def hybrid_weights(strategy: str, weights: str | None) -> HybridWeights | None:
    """The parsed ``weights`` parameter; a ``ValidationError`` (422) unless the strategy is hybrid.

    >>> hybrid_weights("hybrid", "two_tower:1,content:1").weights
    {'two_tower': 1.0, 'content': 1.0}
    """
    if weights is None:
        return None
    if strategy != "hybrid":
        raise ValidationError(
            f"weights apply to strategy=hybrid only, not {strategy!r}", {"parameter": "weights", "strategy": strategy}
        )
    return HybridWeights.parse(weights)


def rank_items(request: RankRequest) -> list[str]:
    """The item ids of a rank request, checked against ``MAX_RANK_ITEMS`` (413 beyond it).

    >>> rank_items(RankRequest(user_id="42", item_ids=["50", "181"]))
    ['50', '181']
    """
    if len(request.item_ids) > MAX_RANK_ITEMS:
        raise PayloadTooLargeError(
            f"POST /rank orders at most {MAX_RANK_ITEMS} items, got {len(request.item_ids)}",
            {"limit": MAX_RANK_ITEMS, "received": len(request.item_ids)},
        )
    return request.item_ids

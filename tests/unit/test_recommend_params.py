"""The query string of GET /recommendations/{user_id}: parsed as FastAPI would, documented from one model."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import QueryParams

from towerlight.api.recommend import create_recommend_app
from towerlight.recommend.schemas import RecommendationsParams


def test_lists_take_every_value_scalars_the_last_and_unknown_names_are_ignored() -> None:
    params = RecommendationsParams.from_query(QueryParams("k=3&exclude=a&exclude=b,c&k=5&strict=true&colour=red"))
    assert (params.k, params.exclude, params.strict, params.strategy) == (5, ["a", "b,c"], True, "auto")


@pytest.mark.parametrize(("query", "location"), [("k=0", "k"), ("k=x", "k"), ("strategy=bandit", "strategy")])
def test_a_bad_value_is_a_validation_error_located_in_the_query(query: str, location: str) -> None:
    with pytest.raises(RequestValidationError) as raised:
        RecommendationsParams.from_query(QueryParams(query))
    assert [error["loc"] for error in raised.value.errors()] == [("query", location)]


def test_the_openapi_document_lists_every_query_parameter_with_its_constraints() -> None:
    operation = create_recommend_app().openapi()["paths"]["/recommendations/{user_id}"]["get"]
    documented = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(documented) == set(RecommendationsParams.model_fields)
    assert documented["k"]["schema"]["maximum"] == 100 and documented["exclude"]["schema"]["type"] == "array"

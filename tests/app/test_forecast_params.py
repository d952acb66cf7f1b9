"""A forecast's horizon and quantiles, parsed once (app.schemas) for the routes and the lane."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from app.errors import InvalidRequest
from app.schemas import ForecastRequest, parse_quantiles, parse_query


def _reference(raw: bytes) -> tuple[int | None, list[float] | None] | None:
    """What the lane answered before: parse_qsl, any repeat or bad value left to the route."""
    horizon, quantiles, seen = None, None, set()
    for name, value in parse_qsl(raw.decode("latin-1"), True):
        if name in seen:
            return None
        seen.add(name)
        if name == "horizon":
            if not value.isdigit() or int(value) < 1:
                return None
            horizon = int(value)
        elif name == "quantiles":
            quantiles = value
    try:
        return horizon, parse_quantiles(quantiles)
    except InvalidRequest:
        return None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"horizon=7",
        b"horizon=7&quantiles=0.1,0.5,0.9",
        b"horizon=7&quantiles=0.1%2C0.5%2c0.9",
        b"quantiles=0.1%2C0.9&horizon=14&other=x",
        b"horizon=0",
        b"horizon=-1",
        b"horizon=+7",
        b"horizon=%37",
        b"horizon=7&horizon=7",
        b"horizon",
        b"quantiles",
        b"quantiles=",
        b"quantiles=0.5,,",
        b"quantiles=0.5+",
        b"quantiles=abc",
        b"quantiles=0,1.5",
        b"quantiles=%%2C0.5",
        b"quantiles=%2%2C0.5",
        b"&&horizon=3&",
        b"=&horizon=3",
        b"a=b=c&horizon=2",
        b"quanti%6Ces=0.5",
        "horizon=4&quantiles=0.5&x=\xe9".encode("latin-1"),
    ],
)
def test_the_lane_parses_queries_as_parse_qsl_does(raw: bytes) -> None:
    assert parse_query(raw) == _reference(raw)


def test_quantiles_are_checked_with_the_same_words_in_query_and_body() -> None:
    assert parse_quantiles(None) is None
    assert parse_quantiles("0.1, 0.9") == [0.1, 0.9]
    with pytest.raises(InvalidRequest, match=r"^quantiles must be numbers, got '0.1,abc'$"):
        parse_quantiles("0.1,abc")
    for raw in ("0,1.5", "", " , "):
        with pytest.raises(InvalidRequest, match=r"^quantiles must lie strictly between 0 and 1$"):
            parse_quantiles(raw)
    with pytest.raises(ValueError, match="quantiles must lie strictly between 0 and 1"):
        ForecastRequest(skus=["A"], quantiles=[0.5, 1.0])
    assert ForecastRequest(skus=["A"], quantiles=[]).quantiles == []  # the defaults, as before

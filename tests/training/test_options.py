"""The training options: one builder for the CLI, the retrain API and its worker."""

from __future__ import annotations

import datetime as dt

import pytest

from training.options import DEFAULT_MODELS, InvalidOptions, TrainOptions, train_options


def test_no_choices_or_none_take_the_defaults() -> None:
    assert train_options({}) == TrainOptions()
    nothing = dict.fromkeys(("cutoff", "models", "strategy", "horizon", "folds", "metric"))
    assert train_options(nothing) == TrainOptions()
    assert train_options({"models": []}).models == list(DEFAULT_MODELS)


def test_cli_and_json_spellings_make_the_same_options() -> None:
    from_cli = train_options(
        {"cutoff": "2016-03-27", "models": " seasonal_naive, lgbm_tweedie ,", "horizon": 14}
    )
    from_job = train_options(
        {
            "cutoff": dt.date(2016, 3, 27),
            "models": ["seasonal_naive", "lgbm_tweedie"],
            "horizon": 14,
        }
    )
    assert from_cli == from_job
    assert from_cli.models == ["seasonal_naive", "lgbm_tweedie"]
    assert from_cli.folds == TrainOptions().folds and from_cli.strategy == TrainOptions().strategy


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"strategy": "sideways"}, "strategy must be direct, recursive or multi"),
        ({"cutoff": "27/03/2016"}, "is not an ISO date"),
        ({"force": True}, "unknown training option(s): force"),
        ({"models": "lgbm_tweedie,nope"}, "unknown model(s) nope; choose from"),
        ({"metric": "r2"}, "metric 'r2' cannot rank models; choose from rmsse, wape"),
        ({"metric": "bias"}, "metric 'bias' cannot rank models"),
    ],
)
def test_invalid_choices_are_named(choices: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_options(choices)

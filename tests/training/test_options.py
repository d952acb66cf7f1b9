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
        ({"lag_floors": "1,x"}, "lag floors must be whole days"),
        ({"lag_floors": "0,14"}, "lag floors must be between 1 and the horizon (28)"),
        ({"lag_floors": "1,14", "horizon": 7}, "between 1 and the horizon (7)"),
        ({"lag_floors": "14,1"}, "lag floors must be increasing"),
        ({"lag_floors": "1,14", "strategy": "direct"}, "apply to the multi strategy only"),
    ],
)
def test_invalid_choices_are_named(choices: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_options(choices)


def test_lag_floors_reach_the_candidates() -> None:
    from training.pipeline import _candidates

    options = train_options({"lag_floors": " 1, 14,28", "models": "lgbm_tweedie,moving_average"})
    assert options.lag_floors == (1, 14, 28)
    learned = _candidates(options)[0]
    assert [stage[0] for stage in learned._stage_buckets()] == [1, 14, 28]
    # No floors given (or an empty list): the forecaster's default stages.
    assert train_options({"lag_floors": ""}).lag_floors is None
    default = _candidates(train_options({"models": "lgbm_tweedie"}))[0]
    assert [stage[0] for stage in default._stage_buckets()] == [14, 28]

"""Forecasts: interval bands, model choice by history length, rolling-origin MASE."""

from __future__ import annotations

import math

import pytest

from opscope.report.forecast import backtest, forecast, mase_scale


def test_intervals_are_nested_and_repeatable() -> None:
    history = [100.0, 120, 130, 125, 150, 160, 155, 170, 180, 178]
    first = forecast(history, horizon=3, season_length=12)
    again = forecast(history, horizon=3, season_length=12)
    assert first is not None and again is not None
    assert first.mean == again.mean and first.upper95 == again.upper95
    for k in range(3):
        assert (
            first.lower95[k]
            <= first.lower80[k]
            <= first.mean[k]
            <= first.upper80[k]
            <= first.upper95[k]
        )
        assert first.upper95[k] - first.lower95[k] > first.upper80[k] - first.lower80[k] > 0
    # Ten months are fewer than two yearly cycles: damped trend, no season, a warning.
    assert first.model == "ETS(A,Ad,N)"
    assert any("fewer than two seasonal cycles (24)" in w for w in first.warnings)


def test_two_seasonal_cycles_give_a_seasonal_model() -> None:
    season = [10.0, 30, 20, 40]
    history = [v + 2 * i for i, v in enumerate(season * 3)]
    result = forecast(history, horizon=4, season_length=4)
    assert result is not None and result.model == "ETS(A,Ad,A)" and result.warnings == []
    # The seasonal shape continues: the peak quarter stays above the trough.
    assert result.mean[3] > result.mean[0]


def test_too_short_a_history_gives_no_forecast() -> None:
    assert forecast([5.0, 6.0], horizon=2, season_length=12) is None


def test_mase_scale_is_the_in_sample_naive_mae() -> None:
    # |3-1|, |6-3|, |10-6| → mean 3.
    assert mase_scale([1.0, 3, 6, 10], 12) == 3.0


def test_backtest_on_a_straight_line() -> None:
    history = [100.0 + 10 * t for t in range(12)]
    bt = backtest(history, horizon=3, season_length=12, origins=6)
    assert bt is not None
    # Cut-offs 6..11; the naive forecast repeats the last value, so its error k steps ahead is
    # 10·k: four cut-offs with 3 steps (10+20+30), one with 2 (10+20), one with 1 (10).
    assert (bt.origins, bt.points) == (6, 15)
    assert bt.naive_mae == pytest.approx((4 * 60 + 30 + 10) / 15)
    # A trend model beats the naive forecast on a trend: MASE (scale 10) well under 1.
    assert bt.mase is not None and math.isfinite(bt.mase) and bt.mase < 0.5


def test_forecast_and_intervals_are_statsmodels_own() -> None:
    # The fits skip the parameters' covariance matrix; the forecast and both interval levels
    # must still be exactly those of a plain ETSModel(...).fit() and its exact prediction.
    import warnings

    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    history = [100.0 + 3 * t + 20 * math.sin(2 * math.pi * t / 12) + (t % 5) for t in range(40)]
    ours = forecast(history, horizon=3, season_length=12)
    assert ours is not None and ours.model == "ETS(A,Ad,A)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ETSModel(
            pd.Series(history),
            error="add",
            trend="add",
            damped_trend=True,
            seasonal="add",
            seasonal_periods=12,
        ).fit(disp=False)
        prediction = fitted.get_prediction(start=40, end=42)
    p80, p95 = prediction.summary_frame(alpha=0.2), prediction.summary_frame(alpha=0.05)
    assert ours.mean == pytest.approx(list(p80["mean"]), rel=1e-12)
    assert ours.lower80 == pytest.approx(list(p80["pi_lower"]), rel=1e-12)
    assert ours.upper80 == pytest.approx(list(p80["pi_upper"]), rel=1e-12)
    assert ours.lower95 == pytest.approx(list(p95["pi_lower"]), rel=1e-12)
    assert ours.upper95 == pytest.approx(list(p95["pi_upper"]), rel=1e-12)

"""Revenue forecasts with prediction intervals, and their rolling-origin backtest.

Model: statsmodels' ``ETSModel`` (exponential smoothing state space models, Hyndman &
Athanasopoulos, *Forecasting: Principles and Practice*, ch. 8) with additive errors, so that the
80 % and 95 % prediction intervals are the exact analytical ones (no simulation: the same
history always gives the same bands):

* at least two seasonal cycles (plus two points) → additive damped trend + additive season;
* shorter history → damped trend without season, with a warning that seasonality cannot be
  estimated (fewer than two cycles);
* fewer than 6 points → simple exponential smoothing (level only); fewer than 3 → no forecast.

Lower bounds below 0 are shown as 0 (revenue cannot be negative), with a note.

Backtest (rolling origin, FPP §5.10): for each of the last ``origins`` cut-off points the model
is refitted on the history up to it and forecasts up to ``horizon`` steps that are in the data.
Accuracy is **MASE** (Hyndman & Koehler 2006): mean absolute error divided by the in-sample mean
absolute error of the one-step naive forecast (the seasonal naive one for seasonal models) on the
same training data; below 1 the model beats the naive forecast. The naive forecast's own MAE on
the same points is reported next to it.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

MIN_POINTS = 3
_SES_BELOW = 6


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin accuracy: MASE, MAE of the model and of the naive forecast, how many
    origins and forecast points were scored, and the horizon reached (the most steps ahead any
    origin scored: at most the requested horizon)."""

    mase: float | None
    mae: float
    naive_mae: float
    origins: int
    points: int
    horizon: int


@dataclass
class Forecast:
    """``horizon`` future values with 80 % and 95 % prediction intervals."""

    model: str
    mean: list[float]
    lower80: list[float]
    upper80: list[float]
    lower95: list[float]
    upper95: list[float]
    backtest: Backtest | None
    warnings: list[str] = field(default_factory=list)


def _spec(n: int, season_length: int) -> tuple[dict[str, Any], str]:
    if season_length > 1 and n >= 2 * season_length + 2:
        return (
            {
                "error": "add",
                "trend": "add",
                "damped_trend": True,
                "seasonal": "add",
                "seasonal_periods": season_length,
            },
            "ETS(A,Ad,A)",
        )
    if n >= _SES_BELOW:
        return {"error": "add", "trend": "add", "damped_trend": True}, "ETS(A,Ad,N)"
    return {"error": "add"}, "ETS(A,N,N)"


@functools.cache
def _ets_model() -> Any:
    """statsmodels' ``ETSModel``, fitting without the parameters' covariance matrix.

    ``ETSResults`` computes that matrix on every fit, from a numerical (complex-step) Hessian
    of the likelihood: about half of the fitting time on monthly series. Neither the point
    forecasts nor the prediction intervals use it — with additive errors the intervals come
    from the model's forecast variance (FPP §8.7; ``PredictionResults`` with
    ``method="exact"``), which does not include parameter uncertainty — so the model, the
    fitted parameters, the forecasts and the intervals are those of ``ETSModel`` itself; only
    the parameters' standard errors are left out (NaN).
    """
    import numpy as np
    from statsmodels.tsa.exponential_smoothing.ets import (
        ETSModel,
        ETSResults,
        ETSResultsWrapper,
    )

    class Results(ETSResults):  # type: ignore[misc]
        @property
        def cov_params_approx(self) -> Any:
            k = len(self.params)
            return np.full((k, k), np.nan)

    class Model(ETSModel):  # type: ignore[misc]
        @property
        def _res_classes(self) -> dict[str, tuple[type, type]]:
            return {"fit": (Results, ETSResultsWrapper)}

    return Model


def _fit(history: list[float], spec: dict[str, Any]) -> Any:
    import pandas as pd

    with warnings.catch_warnings():
        # Optimiser chatter (convergence on tiny series) must not reach users as warnings.
        warnings.simplefilter("ignore")
        return _ets_model()(pd.Series(history, dtype=float), **spec).fit(disp=False)


def _prediction(result: Any, n: int, horizon: int) -> Any:
    """The exact (analytical) prediction of ``horizon`` steps after the ``n`` fitted points."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return result.get_prediction(start=n, end=n + horizon - 1, method="exact")


def forecast(
    history: list[float], *, horizon: int, season_length: int, origins: int = 6
) -> Forecast | None:
    """Forecast ``horizon`` steps after ``history`` (equally spaced buckets, oldest first).

    Returns ``None`` when there are fewer than :data:`MIN_POINTS` values.
    """
    n = len(history)
    if n < MIN_POINTS or horizon < 1:
        return None
    spec, name = _spec(n, season_length)
    notes: list[str] = []
    if season_length > 1 and "seasonal" not in spec:
        notes.append(
            f"{n} periods of history are fewer than two seasonal cycles "
            f"({2 * season_length}): the forecast has no seasonality"
        )
    prediction = _prediction(_fit(history, spec), n, horizon)
    frame80 = prediction.summary_frame(alpha=0.2)
    frame95 = prediction.summary_frame(alpha=0.05)
    values = {
        "mean": [float(v) for v in frame80["mean"]],
        "lower80": [float(v) for v in frame80["pi_lower"]],
        "upper80": [float(v) for v in frame80["pi_upper"]],
        "lower95": [float(v) for v in frame95["pi_lower"]],
        "upper95": [float(v) for v in frame95["pi_upper"]],
    }
    if any(v < 0 for key in ("lower80", "lower95", "mean") for v in values[key]):
        notes.append("bounds below 0 are shown as 0 (revenue cannot be negative)")
        for key in ("mean", "lower80", "lower95"):
            values[key] = [max(0.0, v) for v in values[key]]
    return Forecast(
        model=name,
        backtest=backtest(history, horizon=horizon, season_length=season_length, origins=origins),
        warnings=notes,
        **values,
    )


def mase_scale(train: list[float], season_length: int) -> float:
    """In-sample MAE of the naive forecast (seasonal naive when the training data holds two
    seasonal cycles), the denominator of MASE."""
    lag = season_length if season_length > 1 and len(train) >= 2 * season_length + 2 else 1
    diffs = [abs(train[i] - train[i - lag]) for i in range(lag, len(train))]
    return sum(diffs) / len(diffs) if diffs else math.nan


def backtest(
    history: list[float], *, horizon: int, season_length: int, origins: int
) -> Backtest | None:
    """Rolling-origin evaluation over the last ``origins`` cut-offs (see the module's text);
    ``None`` when the history is too short to hold out anything."""
    n = len(history)
    first_cut = max(_SES_BELOW - 1, MIN_POINTS)
    cuts = [c for c in range(first_cut, n) if c < n][-origins:]
    if not cuts:
        return None
    errors: list[float] = []
    naive_errors: list[float] = []
    scaled: list[float] = []
    for cut in cuts:
        train = history[:cut]
        steps = min(horizon, n - cut)
        spec, _ = _spec(cut, season_length)
        means = _fit(train, spec).forecast(steps)  # point forecasts only: no intervals needed
        scale = mase_scale(train, season_length)
        for k in range(steps):
            error = abs(history[cut + k] - max(0.0, float(means.iloc[k])))
            errors.append(error)
            naive_errors.append(abs(history[cut + k] - train[-1]))
            if scale > 0 and math.isfinite(scale):
                scaled.append(error / scale)
    return Backtest(
        mase=sum(scaled) / len(scaled) if scaled else None,
        mae=sum(errors) / len(errors),
        naive_mae=sum(naive_errors) / len(naive_errors),
        origins=len(cuts),
        points=len(errors),
        horizon=min(horizon, n - cuts[0]),  # the furthest step any origin could score
    )

"""Tests of helpers/overoptimisation.py: Gao et al.'s laws fitted by least squares recover known coefficients, the
peak formulas are the laws' maxima, and a fit reports a poor R^2 for points the law does not describe."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import comparison, overoptimisation


@pytest.mark.parametrize("form, alpha, beta", [("best_of_n", 1.2, 0.3), ("rl", 0.8, 0.5)])
def test_fit_recovers_the_coefficients_of_points_on_the_law(form, alpha, beta):
    d = torch.linspace(0.1, 3.0, 12, dtype=torch.float64)
    gain = d * (alpha - beta * (d if form == "best_of_n" else torch.log(d)))
    fit = overoptimisation.fit(form, (d ** 2).tolist(), gain.tolist())
    assert fit.alpha == pytest.approx(alpha, abs=1e-9) and fit.beta == pytest.approx(beta, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12) and fit.points == 12
    assert torch.allclose(fit(d), gain, atol=1e-9)


@pytest.mark.parametrize("form", overoptimisation.FORMS)
def test_the_peak_is_the_maximum_of_the_fitted_law(form):
    fit = overoptimisation.Fit(form, alpha=1.0, beta=0.4, r2=1.0, points=3)
    grid = torch.linspace(1e-3, 20, 200_001, dtype=torch.float64)
    assert float(grid[fit(grid).argmax()]) == pytest.approx(fit.peak, rel=1e-3)
    assert overoptimisation.Fit(form, 1.0, -0.1, 1.0, 3).peak == math.inf       # no turn: no peak


def test_a_poor_description_gets_a_low_r2_and_bad_input_is_refused():
    d = torch.linspace(0.1, 3, 20, dtype=torch.float64)
    zigzag = torch.where(torch.arange(20) % 2 == 0, 1.0, -1.0).double()
    assert overoptimisation.fit("best_of_n", (d ** 2).tolist(), zigzag.tolist()).r2 < 0.2
    with pytest.raises(ValueError):
        overoptimisation.fit("best_of_n", [0.1, 0.2], [0.0, 0.1])
    with pytest.raises(ValueError):
        overoptimisation.fit("linear", [0.1, 0.2, 0.3], [0.0, 0.1, 0.2])


def test_the_committed_best_of_n_curve_is_fitted_well_and_its_proxy_keeps_rising():
    result = comparison.load_comparison("full")
    points = overoptimisation.best_of_n_points(result)
    proxy = [p["proxy"] for p in points]
    assert all(b >= a - 1e-9 for a, b in zip(proxy, proxy[1:]))      # the proxy never falls as N grows
    ref = result["reference"]["enumerable"]["reward"]
    fit = overoptimisation.fit("best_of_n", [p["kl"] for p in points], [p["gold"] - ref for p in points])
    assert fit.r2 > 0.9 and 0 < fit.peak < math.inf
    assert len(overoptimisation.rl_points(result, "ppo")) >= 3

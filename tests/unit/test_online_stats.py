"""The Wilson interval behind the admin's click-through and conversion rates."""

from __future__ import annotations

import pytest

from towerlight.admin.online import wilson_interval


def test_wilson_interval_matches_the_published_formula() -> None:
    # 10 of 40: statsmodels' proportion_confint(10, 40, method="wilson") gives (0.14187, 0.40194)
    assert wilson_interval(10, 40) == pytest.approx((0.14187, 0.40194), abs=1e-5)


def test_wilson_interval_stays_inside_zero_and_one_at_the_edges() -> None:
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.0 < high < 0.1
    low, high = wilson_interval(50, 50)
    assert 0.9 < low < 1.0 and high == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)

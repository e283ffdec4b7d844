from __future__ import annotations

import numpy as np
import pytest

from basins import wilson_interval
from basins.report import Z_95, format_table, basin_fractions


@pytest.mark.parametrize(("count", "total"), [(0, 10), (3, 10), (50, 100), (10, 10), (81, 263)])
def test_wilson_bounds_solve_the_score_equation(count, total):
    """The bounds are the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    low, high = wilson_interval(count, total)
    p_hat = count / total
    a = 1 + Z_95**2 / total
    b = -(2 * p_hat + Z_95**2 / total)
    c = p_hat**2
    roots = np.sort(np.roots([a, b, c]).real)
    assert low == pytest.approx(max(0.0, roots[0]), abs=1e-12)
    assert high == pytest.approx(min(1.0, roots[1]), abs=1e-12)
    assert low <= p_hat <= high


def test_wilson_edges_are_exact():
    assert wilson_interval(0, 25)[0] == 0.0
    assert wilson_interval(25, 25)[1] == 1.0


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="need 0 <= count <= total"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_table_lists_every_row(tmp_path, small_config):
    from basins import Execution, run

    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=Execution(cluster="synchronous", progress=False))
    rows = basin_fractions(path)
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["id", "class", "attractor"]
    assert len(lines) == len(rows) + 3
    assert "max_steps" in table
    assert "nonfinite" in table
    assert "600 initial conditions" in lines[-1]


def test_warning_names_at_most_ten_flagged_attractors():
    from basins.report import FractionRow

    rows = [
        FractionRow(i, "consensus", f"state {i}", 1, 0.04, 0.0, 0.2, 10.0, "marginal")
        for i in range(25)
    ]
    warning = format_table(rows).splitlines()[-1]
    assert warning.startswith("warning: attractors 0 (marginal), 1 (marginal)")
    assert "9 (marginal) and 15 more are not certified stable" in warning
    assert "10 (marginal)" not in warning

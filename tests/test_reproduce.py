"""Each claim of the reproduction, checked on its own numbers.

The claims share one `Reproduction` (its atlases and equilibrium searches are cached),
so the module maps each system once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from basins.claims import (
    CLAIMS,
    SWEEP_BETAS,
    bipartite_birth,
    claim_attention_rank,
    claim_beta_sweep,
    claim_classes,
    claim_coexistence,
    claim_eigenvectors,
    claim_finite_differences,
    claim_four_classes,
    claim_identity,
    claim_mirror,
    claim_multistable,
    claim_oja,
    claim_polytopes,
    claim_rates,
    claim_saddles,
    claim_small_beta,
    sweep_config,
)
from basins.errors import ConfigError
from basins.reproduce import (
    Reproduction,
    difference_in_sigmas,
    format_claims,
    reproduce,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    return Reproduction(
        tmp_path_factory.mktemp("figures"), tmp_path_factory.mktemp("atlases")
    )


def figure_written(context, claim) -> bool:
    path = context.figure(claim.figure)
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_four_classes_occur_as_stable_states(context):
    claim = claim_classes(context)
    for name in ("consensus", "bipartite", "clustering", "polygonal"):
        assert claim.values["stable_attractors"][name] >= 1
        assert claim.values["shares"][name].low > 0
    assert claim.passed
    assert figure_written(context, claim)


def test_first_three_classes_coexist(context):
    claim = claim_coexistence(context)
    shares = claim.values["shares"]
    assert shares["bipartite"].fraction > 0.3
    assert shares["clustering"].fraction > 0.2
    assert shares["consensus"].low > 0
    assert claim.passed
    assert figure_written(context, claim)


def test_multistable_landmark(context):
    claim = claim_multistable(context)
    assert len(claim.values["stable"]) == 5
    assert all(low > 0 for low in claim.values["lows"].values())
    # The non-principal eigenvector takes most initial conditions.
    assert claim.values["fractions"]["bipartite 2@+v3 2@-v3"] > 0.5
    assert claim.passed
    assert figure_written(context, claim)


def test_consensus_and_bipartite_lie_on_eigenvectors(context):
    claim = claim_eigenvectors(context)
    assert claim.values["equilibria"] >= 20
    assert claim.values["max_misalignment"] < 1e-9
    assert claim.values["on_v3"].low > 0.5
    assert claim.passed


def test_attention_rank_is_low_at_clustered_states(context):
    claim = claim_attention_rank(context)
    assert claim.values["checked"] >= 10
    assert claim.values["rank_within_clusters"]
    assert claim.values["rank_below_tokens"]
    assert claim.values["polytopes"] == 3
    assert claim.values["polytopes_full_rank"]
    assert claim.passed
    assert figure_written(context, claim)


def test_oja_flow_ends_at_the_top_eigenvector(context):
    claim = claim_oja(context)
    plus, minus = claim.values["plus"], claim.values["minus"]
    assert plus.fraction + minus.fraction >= 0.99
    assert claim.values["sigmas"] <= 3.0
    assert claim.values["same_as_softmax"] == 1.0
    assert claim.passed


def test_bipartite_basins_are_born_as_beta_grows(context):
    claim = claim_beta_sweep(context)
    births = claim.values["births"]
    assert births["2:2"] == pytest.approx(math.atanh(0.5), abs=1e-5)
    assert births["2:2"] < births["3:1"] < 1.0
    shares = claim.values["bipartite"]
    assert all(shares[beta].count == 0 for beta in SWEEP_BETAS if beta < births["2:2"])
    assert all(shares[beta].low > 0 for beta in SWEEP_BETAS if beta > births["3:1"])
    assert shares[6.0].fraction > shares[1.0].fraction + 0.3
    assert claim.passed
    assert figure_written(context, claim)


def test_birth_is_where_the_certificate_changes_sign():
    from basins.stability import certify

    birth = bipartite_birth(2)
    state = np.array([np.eye(3)[0]] * 2 + [-np.eye(3)[0]] * 2)
    below = certify(sweep_config(birth - 1e-3).system, state, polish=False)
    above = certify(sweep_config(birth + 1e-3).system, state, polish=False)
    assert below.verdict == "unstable"
    assert above.verdict == "stable"


def test_small_beta_gives_consensus_half_each(context):
    claim = claim_small_beta(context)
    assert claim.values["plus"].fraction + claim.values["minus"].fraction >= 0.99
    assert claim.values["sigmas"] <= 3.0
    assert claim.passed


def test_certified_rates_equal_analytic_rates(context):
    claim = claim_rates(context)
    assert set(claim.values["errors"]) == {"softmax", "unnormalized", "oja"}
    assert max(claim.values["errors"].values()) <= 1e-6
    assert claim.values["eigenvectors"] == 6
    assert claim.passed
    assert figure_written(context, claim)


def test_analytic_jacobian_equals_differences(context):
    claim = claim_finite_differences(context)
    assert max(claim.values["errors"].values()) <= 1e-6
    assert claim.passed


def test_identity_reaches_consensus(context):
    claim = claim_identity(context)
    assert claim.values["consensus"].fraction >= 0.99
    assert claim.values["verdicts"] == ["stable modulo symmetry"]
    assert claim.passed


def test_negative_identity_gives_regular_polytopes(context):
    claim = claim_polytopes(context)
    for name in ("pentagon", "tetrahedron", "octahedron"):
        assert claim.values["shares"][name].fraction >= 0.99
        assert claim.values["verdicts"][name] == "stable modulo symmetry"
    assert claim.passed
    assert figure_written(context, claim)


def test_four_class_landmark(context):
    claim = claim_four_classes(context)
    assert claim.values["on_v3"].fraction > 0.3
    assert claim.values["clustering"].fraction > 0.2
    assert 0 < claim.values["squares"].low
    assert claim.values["squares"].fraction < 0.1
    assert claim.passed


def test_mirror_images_have_equal_fractions(context):
    claim = claim_mirror(context)
    assert claim.values["pairs"] == 3
    assert claim.values["unpaired"] == 0
    assert claim.values["max_sigmas"] <= 3.0
    assert claim.passed


def test_search_lists_saddles_as_predicted(context):
    claim = claim_saddles(context)
    assert claim.values["consensus"] == 6
    assert claim.values["mismatches"] == 0
    assert claim.values["unstable"] >= 10
    assert claim.values["max_speed"] < 1e-10
    assert claim.passed
    assert figure_written(context, claim)


def test_difference_in_sigmas():
    assert difference_in_sigmas(50, 50, 100) == 0.0
    assert difference_in_sigmas(0, 0, 100) == 0.0
    # p1 = 0.6, p2 = 0.4: variance (1 - 0.04) / 100.
    assert difference_in_sigmas(60, 40, 100) == pytest.approx(0.2 / math.sqrt(0.0096))


def test_table_has_one_row_per_claim(context):
    claims = [claim_rates(context), claim_finite_differences(context)]
    lines = format_claims(claims).splitlines()
    assert lines[0].split() == [
        "claim",
        "statement",
        "system",
        "figure",
        "measured",
        "result",
    ]
    assert len(lines) == 2 + len(claims) + 1
    assert lines[2].startswith("rates")
    assert lines[2].endswith("pass")
    assert lines[-1] == "2 of 2 claims pass"


def test_unknown_claim_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown claim 'everything'"):
        reproduce(tmp_path, only=["everything"])


def test_every_claim_has_a_test():
    tested = {
        name.removeprefix("claim_") for name in globals() if name.startswith("claim_")
    }
    assert {CLAIMS[name].__name__.removeprefix("claim_") for name in CLAIMS} <= tested

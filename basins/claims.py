"""The claims of the theory, each measured on a concrete system.

Each ``claim_*`` function takes a `basins.reproduce.Reproduction`, measures one claim
and returns a `basins.reproduce.Claim`. The claims cover which classes of equilibria
occur and which coexist, how they sit on the eigenvectors of ``V``, and the rank of
their attention matrices. Further claims cover the Oja flow, the birth of bipartite
basins as ``beta`` grows and the analytic consensus rates. The rest check the
landmark systems: consensus for ``V = I``, the multistable system, the regular
polytopes of ``V = -I``, the four-class system and the mirror symmetry ``x -> -x``.

"Within sampling error" means within `SAMPLING_SIGMAS` standard errors of the
difference of two fractions of one sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from basins.classify import (
    CLASS_BIPARTITE,
    CLASS_CLUSTERING,
    CLASS_CONSENSUS,
    CLASS_NAMES,
    CLASS_POLYGONAL,
)
from basins.config import Config, Integration, Sampling, System
from basins.equilibria import Equilibrium
from basins.examples import example_config
from basins.figures import (
    Panel,
    Series,
    plot_attention,
    plot_fractions,
    plot_rate_check,
    plot_spectra,
    plot_states,
    plot_sweep,
)
from basins.report import FractionRow
from basins.reproduce import Claim, Reproduction, Sample, difference_in_sigmas
from basins.stability import (
    certify,
    finite_difference_jacobian,
    speed_tolerance,
    tangent_bases,
    tangent_jacobian,
)

# Largest difference allowed between certified and analytic rates.
RATE_AGREEMENT = 1e-6

# Two fractions agree within sampling error when they differ by at most this many
# standard errors of their difference.
SAMPLING_SIGMAS = 3.0

# "Almost every initial condition": the least fraction that has to reach the attractor.
ALMOST_EVERY = 0.99

# Values of beta in the sweep of the birth of bipartite basins.
SWEEP_BETAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

# Spectrum of K = V in the sweep: symmetric positive definite, top eigenvalue well
# separated.
SWEEP_SPECTRUM = (1.0, 0.5, 0.2)


# ----------------------------------------------------------------------------------
# Systems


def _sampled(config: Config, n_initial: int, chunk_size: int | None = None) -> Config:
    return config.with_sampling(
        n_initial=n_initial, chunk_size=chunk_size or n_initial, seed=0
    )


def multistable_config() -> Config:
    """Return the ``multistable`` example with 4000 initial conditions."""
    return _sampled(example_config("multistable"), 4000, 1000)


def four_classes_config() -> Config:
    """Return the ``four-classes`` example with 2000 initial conditions."""
    return _sampled(example_config("four-classes"), 2000, 500)


def sweep_config(beta: float, *, weighting: str = "softmax") -> Config:
    """Return ``Q = I``, ``K = V = diag(1, 0.5, 0.2)``, 4 tokens in R^3, 1000 ICs."""
    spectrum = {"diagonal": list(SWEEP_SPECTRUM)}
    return Config(
        system=System(
            n_tokens=4, dim=3, beta=beta, K=spectrum, V=spectrum, weighting=weighting
        ),
        sampling=Sampling(n_initial=1000, seed=0, chunk_size=1000),
        name=f"sweep-beta-{beta:g}",
    )


def polytope_configs() -> dict[str, Config]:
    """Return ``V = -I``, ``Q = K = I``, ``beta = 1`` for the three polytopes."""
    configs = {}
    for name, n_tokens, dim in (
        ("pentagon", 5, 2),
        ("tetrahedron", 4, 3),
        ("octahedron", 6, 3),
    ):
        configs[name] = Config(
            system=System(
                n_tokens=n_tokens,
                dim=dim,
                beta=1.0,
                V={"identity": True, "scale": -1.0},
            ),
            integration=Integration(max_steps=40000),
            sampling=Sampling(n_initial=300, seed=0, chunk_size=300),
            name=name,
        )
    return configs


# Seeds of the random systems of the rate check. With seed 7, V has two real
# eigenvalues and a complex pair. With seed 9, all four eigenvalues are real.
RATE_SEEDS = (7, 9)


def random_rate_systems(seed: int) -> dict[str, System]:
    """Return random ``Q``, ``K`` and non-symmetric ``V`` in R^4, each weighting.

    The entries are Gaussian with standard deviation 1/2, drawn from ``seed``.
    """
    generator = np.random.default_rng(seed)
    Q, K, V = (generator.standard_normal((4, 4)) / 2.0 for _ in range(3))
    return {
        weighting: System(
            n_tokens=5, dim=4, beta=0.7, Q=Q, K=K, V=V, weighting=weighting
        )
        for weighting in ("softmax", "unnormalized", "oja")
    }


def _panels(
    sample: Sample, ids: list[int], title: Callable[[FractionRow], str]
) -> list[Panel]:
    rows = {row.id: row for row in sample.attractors}
    return [
        Panel(
            sample.states[i],
            title(rows[i]),
            CLASS_NAMES.index(rows[i].class_name),
            sample.config.system.V,
        )
        for i in ids
    ]


def _stable(row: FractionRow) -> bool:
    return not row.flagged


# ----------------------------------------------------------------------------------
# The claims


def claim_classes(context: Reproduction) -> Claim:
    """Check that each class occurs as a sampled attractor certified stable."""
    sample = context.sample("four-classes", four_classes_config())
    counts = {}
    shares = {}
    for name in CLASS_NAMES:
        members = [r for r in sample.attractors if r.class_name == name and _stable(r)]
        counts[name] = len(members)
        shares[name] = sample.share(
            lambda r, name=name: r.class_name == name and _stable(r)
        )

    # The most frequent attractor of each class, drawn on the sphere.
    ids = []
    for name in CLASS_NAMES:
        members = [r.id for r in sample.attractors if r.class_name == name]
        ids += members[:1]
    figure = "catalog_four_classes.png"
    plot_states(
        context.figure(figure),
        _panels(sample, ids, lambda r: f"{r.label}\n{r.fraction:.3f}, {r.stability}"),
        title="Q = I, K = V = diag(1, 0.9, -2), beta = 4, n = 6: most frequent "
        "attractor of each class",
    )
    passed = all(counts[name] >= 1 and shares[name].low > 0 for name in CLASS_NAMES)
    measured = ", ".join(
        f"{name} {counts[name]} ({shares[name].fraction:.3f})" for name in CLASS_NAMES
    )
    return Claim(
        "classes",
        "the four classes occur as stable equilibria",
        "four-classes (n=6, d=3, beta=4)",
        figure,
        f"stable attractors (fraction): {measured}",
        passed,
        {"stable_attractors": counts, "shares": shares},
    )


def claim_coexistence(context: Reproduction) -> Claim:
    """Check that stable states of the first three classes coexist in one system."""
    sample = context.sample("four-classes", four_classes_config())
    shares = {
        name: sample.share(lambda r, name=name: r.class_name == name and _stable(r))
        for name in CLASS_NAMES[:3]
    }
    stable = [r for r in sample.attractors if _stable(r)]
    figure = "fractions_four_classes.png"
    plot_fractions(
        context.figure(figure),
        [r.label for r in sample.attractors],
        np.array([r.fraction for r in sample.attractors]),
        np.array([r.low for r in sample.attractors]),
        np.array([r.high for r in sample.attractors]),
        [CLASS_NAMES.index(r.class_name) for r in sample.attractors],
        title=f"four-classes: basin fractions of {len(sample.attractors)} attractors, "
        f"{sample.total} initial conditions",
    )
    passed = len(stable) >= 3 and all(share.low > 0 for share in shares.values())
    measured = "; ".join(f"{name} {share}" for name, share in shares.items())
    return Claim(
        "coexistence",
        "stable consensus, bipartite and clustering states coexist",
        "four-classes (n=6, d=3, beta=4)",
        figure,
        f"{len(stable)} stable attractors; basin fractions {measured}",
        passed,
        {"shares": shares, "stable_attractors": len(stable)},
    )


MULTISTABLE_LANDMARKS = (
    "consensus 4@+v1",
    "bipartite 2@+v1 2@-v1",
    "bipartite 3@+v1 1@-v1",
    "bipartite 2@+v3 2@-v3",
    "bipartite 3@+v3 1@-v3",
)


def claim_multistable(context: Reproduction) -> Claim:
    """Check the multistable landmark: five named states, all stable at once."""
    sample = context.sample("multistable", multistable_config())
    rows = {row.label: row for row in sample.attractors}
    found = {label: rows.get(label) for label in MULTISTABLE_LANDMARKS}
    stable = [label for label, row in found.items() if row is not None and _stable(row)]
    figure = "catalog_multistable.png"
    plot_states(
        context.figure(figure),
        _panels(
            sample,
            [row.id for row in sample.attractors],
            lambda r: (
                f"{r.label}\n{r.fraction:.3f} [{r.low:.3f}, {r.high:.3f}]\n"
                f"{r.stability}"
            ),
        ),
        title="Q = I, K = V = diag(1, 0.5, -3), beta = 2, n = 4: the catalog, with "
        "fractions and verdicts",
    )
    passed = len(stable) == len(MULTISTABLE_LANDMARKS) and all(
        row.low > 0 for row in found.values() if row is not None
    )
    measured = ", ".join(
        f"{label.split(' ', 1)[1]} {'-' if row is None else f'{row.fraction:.3f}'}"
        for label, row in found.items()
    )
    return Claim(
        "multistable",
        "consensus on e1, (2,2) and (3,1) on e1 and e3 all stable",
        "multistable (n=4, d=3, beta=2)",
        figure,
        f"{len(stable)} of {len(MULTISTABLE_LANDMARKS)} stable; fractions {measured}",
        passed,
        {
            "stable": stable,
            "fractions": {
                k: (None if r is None else r.fraction) for k, r in found.items()
            },
            "lows": {k: (None if r is None else r.low) for k, r in found.items()},
        },
    )


def _searched_equilibria(context: Reproduction) -> list[Equilibrium]:
    """Return the equilibria found in the multistable and four-class systems."""
    return context.equilibria("multistable", multistable_config()) + context.equilibria(
        "four-classes", four_classes_config()
    )


def claim_eigenvectors(context: Reproduction) -> Claim:
    """Check that consensus and bipartite equilibria lie on eigenvectors of ``V``."""
    misalignment = [
        1.0 - equilibrium.min_cos
        for equilibrium in _searched_equilibria(context)
        if equilibrium.description.class_code in (CLASS_CONSENSUS, CLASS_BIPARTITE)
    ]
    sample = context.sample("multistable", multistable_config())
    on_v3 = sample.share(
        lambda r: (
            r.class_name == "bipartite" and sample.on_eigenvector(r, 3) and _stable(r)
        )
    )
    worst = max(misalignment)
    passed = worst < 1e-9 and on_v3.low > 0
    return Claim(
        "eigenvectors",
        "consensus/bipartite equilibria lie on eigenvectors of V",
        "multistable, four-classes",
        "catalog_multistable.png",
        f"max 1-|cos| {worst:.1e} over {len(misalignment)} equilibria; stable "
        f"bipartite on non-principal v3: {on_v3}",
        passed,
        {"max_misalignment": worst, "equilibria": len(misalignment), "on_v3": on_v3},
    )


def claim_attention_rank(context: Reproduction) -> Claim:
    """Check that attention matrices have low rank at clustered stable equilibria."""
    clustered = (CLASS_CONSENSUS, CLASS_BIPARTITE, CLASS_CLUSTERING)
    checked = [
        equilibrium
        for equilibrium in _searched_equilibria(context)
        if equilibrium.certificate.is_stable
        and equilibrium.description.class_code in clustered
    ]
    polytopes = []
    for key, config in polytope_configs().items():
        stable = [e for e in context.equilibria(key, config) if e.certificate.is_stable]
        polytopes += stable
    within = all(e.attention_rank <= e.n_clusters for e in checked)
    low_rank = all(e.attention_rank < e.state.shape[0] for e in checked)
    full = all(e.attention_rank == e.n_clusters == e.state.shape[0] for e in polytopes)
    by_class = {}
    for equilibrium in checked:
        by_class.setdefault(equilibrium.class_name, set()).add(
            equilibrium.attention_rank
        )

    examples = _attention_examples(context, checked, polytopes)
    figure = "attention_matrices.png"
    plot_attention(
        context.figure(figure),
        [e.attention[np.ix_(order, order)] for e, order in examples],
        [
            f"{e.description.label}\nrank {e.attention_rank}, {e.n_clusters} clusters"
            for e, _ in examples
        ],
    )
    ranks = ", ".join(f"{name} {sorted(values)}" for name, values in by_class.items())
    return Claim(
        "attention-rank",
        "rank W <= clusters < n at stable clustered states",
        "multistable, four-classes, V=-I polytopes",
        figure,
        f"{len(checked)} stable states, ranks {ranks}; polytopes: rank = n "
        f"(full) at {len(polytopes)}",
        bool(checked) and within and low_rank and bool(polytopes) and full,
        {
            "rank_within_clusters": within,
            "rank_below_tokens": low_rank,
            "polytopes_full_rank": full,
            "checked": len(checked),
            "polytopes": len(polytopes),
        },
    )


def _attention_examples(
    context: Reproduction, checked: list[Equilibrium], polytopes: list[Equilibrium]
) -> list[tuple[Equilibrium, np.ndarray]]:
    """Pick one equilibrium per class, tokens ordered so that clusters are adjacent."""
    picked = []
    for code in (CLASS_CONSENSUS, CLASS_BIPARTITE, CLASS_CLUSTERING):
        members = [e for e in checked if e.description.class_code == code]
        picked += members[-1:]
    picked += [e for e in polytopes if e.description.class_code == CLASS_POLYGONAL][-1:]
    return [(e, np.lexsort(np.round(e.state, 6).T[::-1])) for e in picked]


def claim_oja(context: Reproduction) -> Claim:
    """Check that the Oja flow sends almost every initial condition to ±v1."""
    oja = context.sample("oja", _sampled(example_config("oja"), 2000))
    plus = oja.share(lambda r: r.label == "consensus 4@+v1")
    minus = oja.share(lambda r: r.label == "consensus 4@-v1")
    sigmas = difference_in_sigmas(plus.count, minus.count, plus.total)

    # The same system with softmax weights at beta = 0, from the same initial
    # conditions, must end at the same attractor every time.
    softmax_system = System(
        **{**oja.config.system.to_dict(), "weighting": "softmax", "beta": 0.0}
    )
    softmax = context.sample(
        "oja-softmax-beta0", Config(system=softmax_system, sampling=oja.config.sampling)
    )
    same = float(np.mean(_labels_per_ic(oja) == _labels_per_ic(softmax)))

    total = plus.fraction + minus.fraction
    passed = total >= ALMOST_EVERY and sigmas <= SAMPLING_SIGMAS and same == 1.0
    return Claim(
        "oja",
        "Oja flow (and softmax at beta=0) ends at +v1 or -v1",
        "oja (V=diag(3,2,1), n=4)",
        "",
        f"+v1 {plus.fraction:.3f}, -v1 {minus.fraction:.3f} (differ by {sigmas:.1f} "
        f"sigma); softmax beta=0 same attractor for {same:.0%}",
        passed,
        {"plus": plus, "minus": minus, "sigmas": sigmas, "same_as_softmax": same},
    )


def _labels_per_ic(sample: Sample) -> np.ndarray:
    labels = np.array([row.label for row in sample.attractors] + [""], dtype=object)
    return labels[sample.attractor]


def bipartite_birth(split: int, *, tol: float = 1e-6) -> float:
    """Return the ``beta`` at which the split ``split : 4 - split`` on v1 turns stable.

    Bisection on the largest real part of the certified rates, for the sweep system,
    between ``beta = 0`` (unstable) and ``beta = max(SWEEP_BETAS)`` (stable).
    """
    v1 = np.eye(3)[0]
    state = np.array([v1] * split + [-v1] * (4 - split))

    def max_real(beta: float) -> float:
        return certify(sweep_config(beta).system, state, polish=False).max_real

    low, high = 0.0, max(SWEEP_BETAS)
    if not (max_real(low) > 0 > max_real(high)):
        return math.nan
    while high - low > tol:
        middle = 0.5 * (low + high)
        if max_real(middle) > 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def claim_beta_sweep(context: Reproduction) -> Claim:
    """Check that bipartite basins on v1 appear where the certificate turns stable."""
    births = {"2:2": bipartite_birth(2), "3:1": bipartite_birth(3)}
    series = {
        "consensus on ±v1": [],
        "bipartite 2:2 on v1": [],
        "bipartite 3:1 on v1": [],
    }
    bipartite = []
    for beta in SWEEP_BETAS:
        sample = context.sample(f"sweep-{beta:g}", sweep_config(beta))
        on_v1 = sample.on_eigenvector
        series["consensus on ±v1"].append(
            sample.share(
                lambda r, on_v1=on_v1: r.class_name == "consensus" and on_v1(r, 1)
            )
        )
        series["bipartite 2:2 on v1"].append(
            sample.share(lambda r: r.label == "bipartite 2@+v1 2@-v1")
        )
        series["bipartite 3:1 on v1"].append(
            sample.share(
                lambda r, on_v1=on_v1: (
                    r.class_name == "bipartite"
                    and r.label != "bipartite 2@+v1 2@-v1"
                    and on_v1(r, 1)
                )
            )
        )
        bipartite.append(sample.share(lambda r: r.class_name == "bipartite"))

    figure = "beta_sweep.png"
    plot_sweep(
        context.figure(figure),
        np.array(SWEEP_BETAS),
        [
            Series(
                label,
                np.array([s.fraction for s in shares]),
                np.array([s.low for s in shares]),
                np.array([s.high for s in shares]),
            )
            for label, shares in series.items()
        ],
        xlabel="beta",
        title="Q = I, K = V = diag(1, 0.5, 0.2), n = 4: basin fractions against beta",
        markers=[(value, f"{split} stable") for split, value in births.items()],
    )
    # For n+ = n- with A = V and alpha = lambda_1 = 1, the blocks give the rates
    # lambda_k - tanh(beta) and (lambda_k - 1) tanh(beta): stable once tanh(beta)
    # exceeds lambda_2 / lambda_1.
    analytic_birth = math.atanh(SWEEP_SPECTRUM[1] / SWEEP_SPECTRUM[0])
    first_birth = min(births.values())
    last_birth = max(births.values())
    before = [s for beta, s in zip(SWEEP_BETAS, bipartite) if beta < first_birth]
    after = [s for beta, s in zip(SWEEP_BETAS, bipartite) if beta > last_birth]
    passed = (
        not any(math.isnan(value) for value in births.values())
        and abs(births["2:2"] - analytic_birth) <= 1e-4
        and all(s.count == 0 for s in before)
        and all(s.low > 0 for s in after)
        and after[-1].low > after[0].high
    )
    shares = ", ".join(
        f"{share.fraction:.3f} at {beta:g}"
        for beta, share in zip(SWEEP_BETAS, bipartite)
        if beta in (max(SWEEP_BETAS[: len(before)], default=None), 1.0, SWEEP_BETAS[-1])
    )
    return Claim(
        "beta-sweep",
        "softmax: bipartite basins on v1 are born as beta grows",
        "Q=I, K=V=diag(1,0.5,0.2), n=4",
        figure,
        f"certificate stable from beta {births['2:2']:.4f} (2:2; artanh(0.5) = "
        f"{analytic_birth:.4f}), {births['3:1']:.3f} (3:1); bipartite share {shares}",
        passed,
        {
            "births": births,
            "analytic_birth": analytic_birth,
            "bipartite": dict(zip(SWEEP_BETAS, bipartite)),
        },
    )


def claim_small_beta(context: Reproduction) -> Claim:
    """Check consensus on ±v1, half each, for a positive definite V and small beta."""
    sample = context.sample("sweep-0.25", sweep_config(0.25))
    plus = sample.share(lambda r: r.label == "consensus 4@+v1")
    minus = sample.share(lambda r: r.label == "consensus 4@-v1")
    sigmas = difference_in_sigmas(plus.count, minus.count, plus.total)
    total = plus.fraction + minus.fraction
    return Claim(
        "small-beta",
        "V SPD, small beta: consensus on +v1 or -v1, half each",
        "Q=I, K=V=diag(1,0.5,0.2), n=4, beta=0.25",
        "beta_sweep.png",
        f"+v1 {plus}, -v1 {minus}; sum {total:.3f}, difference {sigmas:.1f} sigma",
        total >= ALMOST_EVERY and sigmas <= SAMPLING_SIGMAS,
        {"plus": plus, "minus": minus, "sigmas": sigmas},
    )


def consensus_rates(system: System) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the analytic and certified consensus rates on each real eigenvector.

    The analytic rates are ``lambda_k - lambda_p`` for every other eigenvalue and
    ``-lambda_p`` with multiplicity ``(n - 1)(d - 1)``, times ``exp(beta alpha)`` with
    ``alpha = v^T A v`` for the unnormalized weighting.
    """
    values, vectors = np.linalg.eig(system.V)
    n, d = system.n_tokens, system.dim
    pairs = []
    for p in range(d):
        if abs(values[p].imag) > 1e-12:
            continue
        vector = vectors[:, p].real / np.linalg.norm(vectors[:, p].real)
        analytic = np.concatenate(
            [np.delete(values, p) - values[p], np.full((n - 1) * (d - 1), -values[p])]
        ).astype(complex)
        if system.weighting == "unnormalized":
            analytic *= math.exp(system.beta * float(vector @ system.A @ vector))
        certified = certify(system, np.tile(vector, (n, 1)), polish=False).rates
        pairs.append((analytic, certified))
    return pairs


def paired_rates(
    analytic: np.ndarray, certified: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pair analytic with certified rates so that the largest gaps are smallest.

    Returns both arrays reordered so that entry ``i`` of one belongs to entry ``i`` of
    the other (an optimal assignment on ``|a - c|``, robust to equal real parts).
    """
    gaps = np.abs(analytic[:, None] - certified[None, :])
    rows, columns = linear_sum_assignment(gaps)
    return analytic[rows], certified[columns]


def claim_rates(context: Reproduction) -> Claim:
    """Check certified consensus rates against the analytic ones, each weighting."""
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for seed in RATE_SEEDS:
        for weighting, system in random_rate_systems(seed).items():
            pairs.setdefault(weighting, [])
            pairs[weighting] += [paired_rates(a, c) for a, c in consensus_rates(system)]
    errors = {
        weighting: max(float(np.abs(a - c).max()) for a, c in found)
        for weighting, found in pairs.items()
    }
    analytic = {
        w: np.concatenate([a.real for a, _ in found]) for w, found in pairs.items()
    }
    certified = {
        w: np.concatenate([c.real for _, c in found]) for w, found in pairs.items()
    }
    figure = "consensus_rates.png"
    plot_rate_check(
        context.figure(figure),
        analytic,
        certified,
        title="consensus rates, random Q, K, non-symmetric V (n = 5, d = 4)",
    )
    worst = max(errors.values())
    return Claim(
        "rates",
        "certified consensus rates equal lambda_k - lambda_p, -lambda_p",
        "random Q, K, V (n=5, d=4, beta=0.7)",
        figure,
        "max error "
        + ", ".join(f"{name} {error:.1e}" for name, error in errors.items()),
        worst <= RATE_AGREEMENT,
        {"errors": errors, "eigenvectors": len(pairs["softmax"])},
    )


def claim_finite_differences(context: Reproduction) -> Claim:
    """Compare the analytic Jacobian with central differences at random states."""
    errors = {}
    generator = np.random.default_rng(11)
    for weighting, system in random_rate_systems(RATE_SEEDS[0]).items():
        worst = 0.0
        for _ in range(3):
            state = generator.standard_normal((system.n_tokens, system.dim))
            state /= np.linalg.norm(state, axis=1, keepdims=True)
            bases = tangent_bases(state)
            analytic = tangent_jacobian(system, state, bases)
            numeric = finite_difference_jacobian(system, state, bases)
            scale = max(1.0, float(np.abs(analytic).max()))
            worst = max(worst, float(np.abs(analytic - numeric).max()) / scale)
        errors[weighting] = worst
    worst = max(errors.values())
    return Claim(
        "jacobian",
        "analytic Jacobian equals central differences",
        "random Q, K, V (n=5, d=4, beta=0.7)",
        "",
        "max relative gap " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()),
        worst <= RATE_AGREEMENT,
        {"errors": errors},
    )


def claim_identity(context: Reproduction) -> Claim:
    """Check that almost every initial condition reaches consensus for V = I."""
    sample = context.sample("identity", _sampled(example_config("identity"), 1000))
    consensus = sample.share(lambda r: r.class_name == "consensus")
    verdicts = sorted(
        {r.stability for r in sample.attractors if r.class_name == "consensus"}
    )
    return Claim(
        "identity",
        "V = I: almost every initial condition reaches consensus",
        "identity (V=Q=K=I, n=8, d=3)",
        "",
        f"consensus {consensus}, verdict {', '.join(verdicts)}",
        consensus.fraction >= ALMOST_EVERY and verdicts == ["stable modulo symmetry"],
        {"consensus": consensus, "verdicts": verdicts},
    )


POLYTOPE_LABELS = {
    "pentagon": "polygonal regular 5-gon",
    "tetrahedron": "polygonal tetrahedron",
    "octahedron": "polygonal octahedron",
}


def claim_polytopes(context: Reproduction) -> Claim:
    """Check that for V = -I every initial condition ends on a regular polytope."""
    shares = {}
    verdicts = {}
    panels = []
    for name, config in polytope_configs().items():
        sample = context.sample(name, config)
        label = POLYTOPE_LABELS[name]
        shares[name] = sample.share(lambda r, label=label: r.label == label)
        rows = [r for r in sample.attractors if r.label == label]
        verdicts[name] = rows[0].stability if rows else "not found"
        panels += _panels(
            sample,
            [r.id for r in rows[:1]],
            lambda r: f"{r.label}\n{r.fraction:.3f}, {r.stability}",
        )
    figure = "catalog_polytopes.png"
    plot_states(
        context.figure(figure),
        panels,
        columns=3,
        title="V = -I, Q = K = I, beta = 1: n = 5 in R^2, n = 4 and n = 6 in R^3",
    )
    passed = all(s.fraction >= ALMOST_EVERY for s in shares.values()) and all(
        v == "stable modulo symmetry" for v in verdicts.values()
    )
    return Claim(
        "polytopes",
        "V = -I: regular pentagon, tetrahedron, octahedron",
        "V=-I, beta=1: (n,d)=(5,2),(4,3),(6,3)",
        figure,
        "; ".join(
            f"{name} {shares[name].fraction:.3f}, {verdicts[name]}" for name in shares
        ),
        passed,
        {"shares": shares, "verdicts": verdicts},
    )


def claim_four_classes(context: Reproduction) -> Claim:
    """Check the four-class landmark: bipartite on e3, 3-4 cluster states, squares."""
    sample = context.sample("four-classes", four_classes_config())
    on_v3 = sample.share(
        lambda r: r.class_name == "bipartite" and sample.on_eigenvector(r, 3)
    )
    clustering = sample.share(
        lambda r: (
            r.class_name == "clustering"
            and int(np.sum(sample.multiplicity[r.id] > 0)) in (3, 4)
        )
    )
    squares = sample.share(
        lambda r: r.class_name == "polygonal" and "square" in r.label
    )
    passed = on_v3.low > 0 and clustering.fraction >= 0.2 and 0 < squares.low
    passed = passed and squares.fraction < clustering.fraction
    return Claim(
        "four-classes",
        "bipartite on e3, many 3-4 cluster states, a few squares",
        "four-classes (n=6, d=3, beta=4)",
        "catalog_four_classes.png",
        f"bipartite on v3 {on_v3}; clustering with 3-4 clusters {clustering}; "
        f"squares {squares}",
        passed,
        {"on_v3": on_v3, "clustering": clustering, "squares": squares},
    )


def claim_mirror(context: Reproduction) -> Claim:
    """Check that each attractor and its mirror image have equal basin fractions."""
    sample = context.sample("multistable", multistable_config())
    pairs = []
    for row in sample.attractors:
        mirror = sample.mirror_of(row)
        if mirror is not None and mirror.id > row.id:
            pairs.append((row, mirror))
    unpaired = [
        r for r in sample.attractors if sample.mirror_of(r) is None and r.count > 0
    ]
    sigmas = [difference_in_sigmas(a.count, b.count, sample.total) for a, b in pairs]
    worst = max(sigmas, default=math.nan)
    return Claim(
        "mirror",
        "x -> -x: an attractor and its mirror have equal fractions",
        "multistable (n=4, d=3, beta=2)",
        "catalog_multistable.png",
        f"{len(pairs)} mirror pairs, largest difference {worst:.1f} sigma; "
        f"{len(unpaired)} without a sampled mirror",
        bool(pairs) and worst <= SAMPLING_SIGMAS and not unpaired,
        {"pairs": len(pairs), "max_sigmas": worst, "unpaired": len(unpaired)},
    )


def claim_saddles(context: Reproduction) -> Claim:
    """Check the unstable equilibria that the search lists against the prediction."""
    config = multistable_config()
    equilibria = context.equilibria("multistable", config)
    system = config.system
    values = np.sort(np.linalg.eigvals(system.V).real)[::-1]
    n, d = system.n_tokens, system.dim
    mismatches = 0
    consensus = 0
    for equilibrium in equilibria:
        if equilibrium.description.class_code != CLASS_CONSENSUS:
            continue
        consensus += 1
        p = equilibrium.description.alignment[0].eigenspace - 1
        expected = int(np.sum(np.delete(values, p) - values[p] > 0))
        expected += (n - 1) * (d - 1) if values[p] < 0 else 0
        mismatches += equilibrium.certificate.unstable_directions != expected
    unstable = [e for e in equilibria if e.certificate.verdict == "unstable"]
    worst_speed = max(e.speed for e in equilibria)

    figure = "spectra_multistable.png"
    plot_spectra(
        context.figure(figure),
        [f"{e.description.label} ({e.certificate.verdict})" for e in equilibria],
        [e.certificate.rates for e in equilibria],
        [e.certificate.verdict for e in equilibria],
        title="multistable: rates of every equilibrium found by the search",
    )
    passed = (
        bool(unstable)
        and consensus == 6
        and mismatches == 0
        and worst_speed < speed_tolerance(system)
    )
    return Claim(
        "saddles",
        "the search lists unstable equilibria, each re-checked",
        "multistable (n=4, d=3, beta=2)",
        figure,
        f"{len(equilibria)} equilibria, {len(unstable)} unstable, max speed "
        f"{worst_speed:.0e}; unstable directions at {consensus} consensus states as "
        f"predicted: {consensus - mismatches}",
        passed,
        {
            "equilibria": len(equilibria),
            "unstable": len(unstable),
            "consensus": consensus,
            "mismatches": mismatches,
            "max_speed": worst_speed,
        },
    )


CLAIMS: dict[str, Callable[[Reproduction], Claim]] = {
    "classes": claim_classes,
    "coexistence": claim_coexistence,
    "multistable": claim_multistable,
    "eigenvectors": claim_eigenvectors,
    "attention-rank": claim_attention_rank,
    "oja": claim_oja,
    "beta-sweep": claim_beta_sweep,
    "small-beta": claim_small_beta,
    "rates": claim_rates,
    "jacobian": claim_finite_differences,
    "identity": claim_identity,
    "polytopes": claim_polytopes,
    "four-classes": claim_four_classes,
    "mirror": claim_mirror,
    "saddles": claim_saddles,
}

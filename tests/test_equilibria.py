from __future__ import annotations

import numpy as np
import pytest

from basins import Classification, Config, Sampling, System
from basins.classify import Matcher
from basins.equilibria import (
    Start,
    _minimise_speed,
    find_equilibria,
    format_equilibria,
    save_equilibria,
    search,
    solve,
    structured_starts,
)
from basins.errors import ConfigError
from basins.stability import (
    VERDICT_NAMES,
    newton,
    speed,
    speed_tolerance,
)

E1, E2, E3 = np.eye(3)


@pytest.fixture(scope="module")
def multistable_equilibria():
    system = System(
        n_tokens=4,
        dim=3,
        beta=2.0,
        K={"diagonal": [1.0, 0.5, -3.0]},
        V={"diagonal": [1.0, 0.5, -3.0]},
    )
    config = Config(
        system=system, sampling=Sampling(n_initial=64, seed=1, chunk_size=64)
    )
    return config, search(config, n_initial=64, n_random=8)


def test_splits_cover_every_eigenvector_and_sign(multistable_system):
    starts = structured_starts(multistable_system)
    splits = [s.source for s in starts if s.source.startswith("split")]
    assert len(splits) == 3 * 5
    assert "split 3:1 on v3" in splits
    assert "split 0:4 on v1" in splits
    three_one = next(s for s in starts if s.source == "split 3:1 on v3")
    assert np.allclose(three_one.state, [E3, E3, E3, -E3])


def test_polygon_and_polytope_starts_sit_in_invariant_subspaces(multistable_system):
    starts = structured_starts(multistable_system)
    polygons = [s for s in starts if "-gon in span(v1, v3)" in s.source]
    assert {s.source for s in polygons} == {
        "3-gon in span(v1, v3)",
        "4-gon in span(v1, v3)",
    }
    for start in polygons:
        assert np.allclose(start.state[:, 1], 0.0)
        assert np.allclose(np.linalg.norm(start.state, axis=1), 1.0)
    tetrahedra = [s for s in starts if s.source.startswith("tetrahedron")]
    assert len(tetrahedra) == 1
    gram = tetrahedra[0].state @ tetrahedra[0].state.T
    assert np.allclose(gram[~np.eye(4, dtype=bool)], -1.0 / 3.0)


def test_every_listed_equilibrium_is_rechecked(multistable_equilibria):
    config, found = multistable_equilibria
    tol = speed_tolerance(config.system)
    assert len(found) >= 20
    for equilibrium in found:
        assert equilibrium.speed < tol
        assert speed(config.system, equilibrium.state) < tol
        assert equilibrium.certificate.verdict in VERDICT_NAMES
        assert equilibrium.attention_rank <= equilibrium.n_clusters
        assert equilibrium.attention.shape == (4, 4)
        assert equilibrium.starts >= 1


def test_search_lists_the_stable_landmarks_and_saddles(multistable_equilibria):
    _, found = multistable_equilibria
    by_label = {}
    for equilibrium in found:
        by_label.setdefault(equilibrium.description.label, []).append(equilibrium)
    for label in (
        "consensus 4@+v1",
        "bipartite 2@+v1 2@-v1",
        "bipartite 3@+v1 1@-v1",
        "bipartite 2@+v3 2@-v3",
        "bipartite 3@+v3 1@-v3",
    ):
        assert by_label[label][0].certificate.verdict == "stable"
    assert by_label["consensus 4@+v2"][0].certificate.unstable_directions == 1
    assert by_label["consensus 4@-v3"][0].certificate.unstable_directions == 8
    stable = [e for e in found if e.certificate.is_stable]
    assert len(stable) == 8
    # Stable ones first, then by the number of unstable directions.
    order = [e.certificate.unstable_directions for e in found]
    assert order == sorted(order)


def test_equilibria_are_distinct(multistable_equilibria):
    config, found = multistable_equilibria
    states = np.array([e.state for e in found])
    matcher = Matcher(config.system, config.classification)
    features = matcher.features(states, np.ones(len(states), dtype=bool))
    group, representatives = matcher.group_representatives(
        features, np.arange(len(states))
    )
    assert len(representatives) == len(found)


def test_permuted_starts_give_one_equilibrium(multistable_system):
    state = np.array([E3, E3, E3, -E3])
    starts = [
        Start(state[order], "permuted")
        for order in ([0, 1, 2, 3], [3, 0, 1, 2], [1, 3, 0, 2])
    ]
    found = find_equilibria(multistable_system, starts)
    assert len(found) == 1
    assert found[0].starts == 3
    assert found[0].description.label == "bipartite 3@+v3 1@-v3"


def test_rotated_polytopes_give_one_equilibrium():
    system = System(n_tokens=6, dim=3, beta=1.0, V={"identity": True, "scale": -1.0})
    generator = np.random.default_rng(2)
    octahedron = np.concatenate([np.eye(3), -np.eye(3)])
    starts = []
    for _ in range(4):
        rotation, _ = np.linalg.qr(generator.standard_normal((3, 3)))
        starts.append(Start(octahedron @ rotation.T, "rotated octahedron"))
    found = find_equilibria(system, starts)
    assert [e.description.label for e in found] == ["polygonal octahedron"]
    assert found[0].certificate.verdict == "stable modulo symmetry"
    assert found[0].attention_rank == 6


def test_fallback_minimises_the_speed(multistable_system):
    start = np.array([E1, E1, -E1, -E1]) + 0.01 * np.random.default_rng(
        4
    ).standard_normal((4, 3))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    improved = _minimise_speed(multistable_system, start)
    assert speed(multistable_system, improved) < 1e-3 * speed(multistable_system, start)
    _, final_speed = newton(multistable_system, improved)
    assert final_speed < speed_tolerance(multistable_system)


def test_solve_reaches_an_equilibrium_from_random_points(multistable_system):
    generator = np.random.default_rng(9)
    converged = 0
    for _ in range(10):
        state = generator.standard_normal((4, 3))
        state /= np.linalg.norm(state, axis=1, keepdims=True)
        solution, ok = solve(multistable_system, state)
        if ok:
            converged += 1
            assert speed(multistable_system, solution) < speed_tolerance(
                multistable_system
            )
    assert converged >= 8


def test_format_lists_every_equilibrium(multistable_equilibria):
    _, found = multistable_equilibria
    text = format_equilibria(found, spectra=True)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["id", "class", "equilibrium"]
    assert "rank W" in lines[0]
    assert f"{len(found)} equilibria, 8 stable" in text
    assert sum(line.startswith("0: ") for line in lines) == 1


def test_saved_equilibria_round_trip(tmp_path, multistable_equilibria):
    _, found = multistable_equilibria
    path = tmp_path / "equilibria.npz"
    save_equilibria(path, found)
    data = np.load(path)
    assert data["state"].shape == (len(found), 4, 3)
    assert data["rate_real"].shape == (len(found), 8)
    assert list(data["verdict"]) == [e.certificate.verdict for e in found]
    assert np.array_equal(data["attention_rank"], [e.attention_rank for e in found])
    assert np.allclose(data["rate_real"][0], found[0].certificate.rates.real)


@pytest.mark.parametrize(("key", "value"), [("n_initial", -1), ("n_random", 2.5)])
def test_search_rejects_bad_counts(multistable_system, key, value):
    config = Config(system=multistable_system, classification=Classification())
    with pytest.raises(ConfigError, match=f"{key} = {value!r} is invalid"):
        search(config, **{key: value})

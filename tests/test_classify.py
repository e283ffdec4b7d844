from __future__ import annotations

import math

import numpy as np
import pytest

from basins import Classification, Integration, System, initial_conditions, integrate
from basins.classify import (
    CLASS_BIPARTITE,
    CLASS_CLUSTERING,
    CLASS_CONSENSUS,
    CLASS_POLYGONAL,
    Matcher,
    classify_centres,
    classify_states,
    cluster_tokens,
    commuting_generators,
    continuous_symmetries,
    eigenspaces,
)
from basins.kernels import STATUS_CONVERGED, STATUS_MAX_STEPS

E1, E2, E3 = np.eye(3)


def polygon(k: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k + 0.3
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(k)], axis=1)


TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
OCTAHEDRON = np.concatenate([np.eye(3), -np.eye(3)])


@pytest.mark.parametrize(
    ("centres", "expected", "shape"),
    [
        (E1[None], CLASS_CONSENSUS, ""),
        (np.stack([E2, -E2]), CLASS_BIPARTITE, ""),
        (np.stack([E1, E2]), CLASS_CLUSTERING, ""),
        (polygon(3), CLASS_POLYGONAL, "triangle"),
        (polygon(5), CLASS_POLYGONAL, "regular 5-gon"),
        (TETRAHEDRON, CLASS_POLYGONAL, "tetrahedron"),
        (OCTAHEDRON, CLASS_POLYGONAL, "octahedron"),
        (np.stack([E1, -E1, E3]), CLASS_CLUSTERING, ""),
        (polygon(4)[[0, 1, 2]], CLASS_CLUSTERING, ""),
    ],
)
def test_class_of_centres(centres, expected, shape):
    result = classify_centres(centres, 1e-2)
    assert result.class_code == expected
    assert result.name == shape


def test_square_is_polygonal():
    assert classify_centres(polygon(4), 1e-2).name == "square"


def test_clusters_group_close_tokens():
    tilt = np.array([1.0, 1e-5, 0.0]) / np.linalg.norm([1.0, 1e-5, 0.0])
    state = np.stack([E1, -E1, tilt, E3])
    clusters = cluster_tokens(state[None], np.array([True]), 1e-3)
    assert clusters.n_clusters[0] == 3
    assert sorted(clusters.multiplicity[0, :3].tolist()) == [1, 1, 2]
    skipped = cluster_tokens(state[None], np.array([False]), 1e-3)
    assert skipped.n_clusters[0] == 0


def test_clusters_link_chains():
    angles = np.array([0.0, 0.8e-3, 1.6e-3, 2.4e-3])
    state = np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=1)
    clusters = cluster_tokens(state[None], np.array([True]), 1e-3)
    assert clusters.n_clusters[0] == 1


def test_eigenspaces_order_and_sign():
    V = np.array([[0.5, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 3.0]])
    spaces = eigenspaces(-V)
    assert [round(s.eigenvalue.real, 12) for s in spaces] == [2.0, -0.5, -3.0]
    assert np.allclose(spaces[0].basis[:, 0], E2)
    assert all(s.is_vector for s in spaces)


def test_eigenspaces_group_repeated_and_complex_values():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    spaces = eigenspaces(rotation)
    assert [s.basis.shape[1] for s in spaces] == [2, 1]
    assert spaces[0].name == "E1"
    assert spaces[1].name == "v2"
    assert [s.basis.shape[1] for s in eigenspaces(np.eye(3))] == [3]


def test_continuous_symmetries_are_detected():
    assert len(continuous_symmetries(System(n_tokens=2, dim=3, beta=1.0, V=-np.eye(3)))) == 3
    partial = System(n_tokens=2, dim=3, beta=1.0, V={"diagonal": [1.0, 1.0, -3.0]})
    assert len(continuous_symmetries(partial)) == 1
    broken = System(n_tokens=2, dim=3, beta=1.0, K={"diagonal": [1.0, 2.0, 3.0]},
                    V={"diagonal": [1.0, 1.0, -3.0]})
    assert len(continuous_symmetries(broken)) == 0
    oja = System(n_tokens=2, dim=3, beta=1.0, K={"diagonal": [1.0, 2.0, 3.0]},
                 V={"diagonal": [1.0, 1.0, -3.0]}, weighting="oja")
    assert len(continuous_symmetries(oja)) == 1


def _classify(system, states):
    status = np.full(len(states), STATUS_CONVERGED, dtype=np.int8)
    matcher = Matcher(system, Classification())
    return classify_states(np.array(states), status, matcher, eigenspaces(system.V), 0)


def test_identity_ignores_token_order_but_not_the_split(multistable_system):
    three_up = np.stack([E3, E3, E3, -E3])
    one_up = -three_up
    permuted = three_up[[3, 0, 1, 2]]
    result = _classify(multistable_system, [three_up, one_up, permuted, one_up[[1, 0, 2, 3]]])
    assert result.local_label.tolist() == [0, 1, 0, 1]
    assert [a.label for a in result.attractors] == [
        "bipartite 3@+v3 1@-v3",
        "bipartite 3@-v3 1@+v3",
    ]
    assert all(a.class_code == CLASS_BIPARTITE for a in result.attractors)


def test_alignment_reports_eigenvector_sign_and_cos(multistable_system):
    result = _classify(multistable_system, [np.stack([-E1] * 4)])
    attractor = result.attractors[0]
    assert attractor.label == "consensus 4@-v1"
    assert attractor.alignment[0].eigenspace == 1
    assert attractor.alignment[0].sign == -1
    assert attractor.alignment[0].cos == pytest.approx(1.0)


def test_states_off_eigenvectors_are_marked(multistable_system):
    tilted = np.array([1.0, 1.0, 0.0]) / math.sqrt(2)
    result = _classify(multistable_system, [np.stack([tilted] * 4)])
    assert result.attractors[0].label.startswith("consensus 4@~v")
    assert result.attractors[0].alignment[0].cos == pytest.approx(1 / math.sqrt(2))


def test_rotated_polytopes_are_one_attractor():
    system = System(n_tokens=4, dim=3, beta=1.0, V={"identity": True, "scale": -1.0})
    rng = np.random.default_rng(0)
    states = []
    for _ in range(5):
        rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        states.append(TETRAHEDRON[rng.permutation(4)] @ rotation.T)
    result = _classify(system, states)
    assert result.local_label.tolist() == [0] * 5
    assert result.attractors[0].label == "polygonal tetrahedron"


def test_unconverged_states_get_no_label(multistable_system):
    status = np.array([STATUS_CONVERGED, STATUS_MAX_STEPS], dtype=np.int8)
    states = np.stack([np.stack([E1] * 4), np.stack([E2] * 4)])
    matcher = Matcher(multistable_system, Classification())
    result = classify_states(states, status, matcher, eigenspaces(multistable_system.V), 0)
    assert result.local_label.tolist() == [0, -1]
    assert result.class_code.tolist() == [CLASS_CONSENSUS, -1]


def test_mirror_of_each_attractor_is_its_mirror_image(multistable_system):
    initial = initial_conditions(21, 0, 400, 4, 3)
    outcome = integrate(multistable_system, Integration(), np.concatenate([initial, -initial]))
    result = _classify(multistable_system, outcome.final_state)
    labels = [result.attractors[k].label for k in result.local_label]
    flip = str.maketrans("+-", "-+")
    for forward, mirrored in zip(labels[:400], labels[400:]):
        assert sorted(mirrored.split()) == sorted(forward.translate(flip).split())
    assert "bipartite 3@+v3 1@-v3" in labels[:400]


@pytest.mark.parametrize(
    ("V", "n_tokens", "dim", "expected"),
    [
        ({"identity": True, "scale": -1.0}, 5, 2, "polygonal regular 5-gon"),
        ({"identity": True, "scale": -1.0}, 4, 3, "polygonal tetrahedron"),
        ({"identity": True, "scale": -1.0}, 6, 3, "polygonal octahedron"),
        ("identity", 8, 3, "consensus 8@E1"),
    ],
)
def test_landmark_systems_reach_their_attractor(V, n_tokens, dim, expected):
    system = System(n_tokens=n_tokens, dim=dim, beta=1.0, V=V)
    initial = initial_conditions(22, 0, 100, n_tokens, dim)
    outcome = integrate(system, Integration(max_steps=40000), initial)
    assert np.mean(outcome.status == STATUS_CONVERGED) >= 0.99
    result = _classify(system, outcome.final_state[outcome.status == STATUS_CONVERGED])
    assert [a.label for a in result.attractors] == [expected]


def brute_force_generators(matrices, d):
    """The skew matrices commuting with every matrix, by a search over all of so(d)."""
    skew_basis = []
    for a in range(d):
        for b in range(a + 1, d):
            generator = np.zeros((d, d))
            generator[a, b], generator[b, a] = 1.0, -1.0
            skew_basis.append(generator)
    system = np.array(
        [np.concatenate([(g @ M - M @ g).ravel() for M in matrices]) for g in skew_basis]
    ).T
    _, singular, right = np.linalg.svd(system)
    rank = int(np.sum(singular > 1e-10 * max(1.0, max(np.abs(M).max() for M in matrices))))
    return np.einsum("kc,cij->kij", right[rank:], np.array(skew_basis))


def symmetry_cases():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    skew = np.zeros((6, 6))
    skew[0, 1], skew[1, 0], skew[2, 3], skew[3, 2] = 1.0, -1.0, 2.0, -2.0
    low_rank = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 6))
    general = rng.normal(size=(6, 6))
    return {
        "identity": [np.eye(6), np.eye(6)],
        "diagonal": [np.diag([1.0, 1, 2, 2, 2, 3]), np.diag([1.0, 1, 2, 2, 5, 3])],
        "rotated diagonal": [
            rotation @ np.diag([1.0, 1, 2, 2, 2, 3]) @ rotation.T,
            rotation @ np.diag([4.0, 4, 1, 1, 1, 0]) @ rotation.T,
        ],
        "general": [general, general.T @ general],
        "skew part": [skew, np.eye(6)],
        "non-symmetric A": [np.diag([1.0, 1, 1, 1, 2, 2]), np.eye(6) + skew],
        "low rank": [low_rank, low_rank @ low_rank.T],
    }


@pytest.mark.parametrize("case", list(symmetry_cases()))
def test_generators_span_the_commutant(case):
    """The search inside eigenspaces finds the same Lie algebra as the search over
    all skew matrices."""
    matrices = symmetry_cases()[case]
    found = commuting_generators(matrices, 6)
    expected = brute_force_generators(matrices, 6)
    assert len(found) == len(expected)
    for generator in found:
        assert np.allclose(generator, -generator.T)
        for M in matrices:
            assert np.abs(generator @ M - M @ generator).max() < 1e-12
    if len(found):
        both = np.vstack([found.reshape(len(found), -1), expected.reshape(len(found), -1)])
        assert np.linalg.matrix_rank(both, tol=1e-8) == len(found)


def test_generic_large_system_has_no_symmetry():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(256, 256))
    assert commuting_generators([noise + noise.T, np.eye(256)], 256).shape == (0, 256, 256)


def test_oversized_symmetry_search_is_skipped(caplog):
    with caplog.at_level("WARNING", logger="basins.classify"):
        found = commuting_generators([np.eye(64), np.eye(64)], 64)
    assert found.shape == (0, 64, 64)
    assert "continuous symmetries not searched: 2016 candidate generators" in caplog.text


def test_symmetric_system_without_converged_states(tmp_path):
    """Rotation invariants of no state at all: the catalog is empty, not a crash."""
    from basins import Config, Execution, run
    from basins.report import basin_fractions

    config = Config.from_dict(
        {
            "system": {"n_tokens": 2, "dim": 3, "beta": 1.0},
            "integration": {"max_steps": 5},
            "sampling": {"n_initial": 4, "chunk_size": 2},
        }
    )
    assert len(continuous_symmetries(config.system)) == 3
    path = tmp_path / "atlas.zarr"
    run(config, path, execution=Execution(cluster="synchronous", progress=False))
    rows = {row.class_name: row.count for row in basin_fractions(path)}
    assert rows == {"max_steps": 4, "nonfinite": 0}


def test_symmetry_tolerance_is_relative_to_each_matrix():
    """A huge V = c I does not make the structure of A negligible."""
    found = commuting_generators([1e10 * np.eye(3), np.diag([1.0, 0.5, -3.0])], 3)
    assert found.shape == (0, 3, 3)
    found = commuting_generators([1e10 * np.eye(3), np.diag([1.0, 1.0, -3.0])], 3)
    assert found.shape == (1, 3, 3)

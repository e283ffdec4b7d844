from __future__ import annotations

import numpy as np
import pytest
import zarr

from basins import (
    AtlasError,
    ConfigError,
    Execution,
    Sweep,
    resume_sweep,
    run,
    run_sweep,
)
from basins.atlas import read_catalog, read_config
from basins.cli import main
from basins.config import Config
from basins.sweep import (
    CatalogSummary,
    apply_parameter,
    member_paths,
    parse_values,
    track_attractors,
    track_events,
)

from conftest import SWEEP_BETAS

SYNCHRONOUS = Execution(cluster="synchronous", progress=False)
PER_IC = ("status", "steps", "final_state", "attractor", "class")


def per_ic_bytes(path) -> dict[str, bytes]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:].tobytes() for name in PER_IC}


def sweep_bytes(path) -> list[dict[str, bytes]]:
    return [per_ic_bytes(member) for member in member_paths(path)]


# Parsing of values and keys


def test_range_includes_both_ends():
    assert parse_values("0:8:33") == tuple(np.linspace(0.0, 8.0, 33))
    assert parse_values("0:8:33")[1] == 0.25
    assert parse_values("2:1:3") == (2.0, 1.5, 1.0)


def test_list_keeps_its_order():
    assert parse_values("0.5,1,2") == (0.5, 1.0, 2.0)
    assert parse_values(" 3 ") == (3.0,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:8", "expected START:STOP:COUNT"),
        ("0:8:1", "COUNT must be an integer >= 2"),
        ("0:8:2.5", "expected START:STOP:COUNT"),
        ("1,a,2", "expected START:STOP:COUNT"),
        ("1,3,2", "strictly increasing or strictly decreasing"),
        ("1,1", "strictly increasing or strictly decreasing"),
        ("1,nan", "every value must be finite"),
    ],
)
def test_bad_values_are_rejected(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_values(text)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("sampling.seed", "same initial conditions"),
        ("system.n_tokens", "changes the shape of the atlas arrays"),
        ("system.weighting", "not a number"),
        ("system.temperature", "not a numeric setting"),
        ("system.V.colour", "not a numeric setting"),
    ],
)
def test_bad_parameter_is_rejected(small_config, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        apply_parameter(small_config, key, 1.0)
    assert "allowed parameters are system.beta" in str(error.value)


def test_beta_is_set_and_validated(small_config):
    assert apply_parameter(small_config, "system.beta", 0.75).system.beta == 0.75
    with pytest.raises(ConfigError, match="system.beta = -1.0 is invalid"):
        apply_parameter(small_config, "system.beta", -1.0)


def test_matrix_scale_multiplies_resolved_matrix(small_config):
    scaled = apply_parameter(small_config, "system.V.scale", 2.5)
    assert np.array_equal(scaled.system.V, 2.5 * small_config.system.V)
    assert np.array_equal(scaled.system.K, small_config.system.K)


def test_spectral_norm_and_entry(small_config):
    normed = apply_parameter(small_config, "system.K.spectral_norm", 6.0)
    assert np.linalg.norm(normed.system.K, 2) == pytest.approx(6.0)
    entry = apply_parameter(small_config, "system.V[2][2]", -1.5)
    assert entry.system.V[2, 2] == -1.5
    assert entry.system.V[0, 0] == small_config.system.V[0, 0]
    with pytest.raises(ConfigError, match="rows and columns run from 0 to 2"):
        apply_parameter(small_config, "system.V[3][0]", 1.0)


def test_integer_parameter_needs_integers(small_config):
    assert apply_parameter(small_config, "integration.max_steps", 300.0).integration.max_steps == 300
    with pytest.raises(ConfigError, match="integration.max_steps = 300.5 is invalid"):
        apply_parameter(small_config, "integration.max_steps", 300.5)


def test_invalid_value_fails_before_anything_is_written(tmp_path, small_config):
    sweep = Sweep(small_config, "integration.dt", (0.05, 0.0))
    with pytest.raises(ConfigError, match="integration.dt = 0.0 is invalid"):
        run_sweep(sweep, tmp_path / "sweep.zarr", execution=SYNCHRONOUS)
    assert not (tmp_path / "sweep.zarr").exists()


# Storage, equivalence with single runs, resumption


def test_sweep_layout(small_sweep):
    group = zarr.open_group(str(small_sweep), mode="r")
    assert group.attrs["basins_sweep_format"] == 1
    assert group.attrs["parameter"] == "system.beta"
    assert group.attrs["dimension"] == "beta"
    assert group.attrs["values"] == list(SWEEP_BETAS)
    assert group.attrs["members"] == ["p000", "p001", "p002", "p003"]
    assert group.attrs["finalized"] is True
    base = Config.from_dict(group.attrs["config"])
    for value, member in zip(SWEEP_BETAS, member_paths(small_sweep)):
        config = read_config(member)
        assert config.system.beta == value
        assert config.to_dict()["sampling"] == base.to_dict()["sampling"]
        assert config.to_dict()["integration"] == base.to_dict()["integration"]
    assert group["tracks"]["attractor"].metadata.dimension_names == ("track", "beta")


def test_member_equals_a_single_run(tmp_path, small_sweep):
    member = member_paths(small_sweep)[2]
    alone = tmp_path / "alone.zarr"
    run(read_config(member), alone, execution=SYNCHRONOUS)
    assert per_ic_bytes(member) == per_ic_bytes(alone)
    assert [e.label for e in read_catalog(member)] == [e.label for e in read_catalog(alone)]


def test_resume_per_value_and_chunk(tmp_path, small_config):
    config = small_config.with_sampling(n_initial=300, chunk_size=100)
    sweep = Sweep(config, "system.V.scale", (0.5, 1.0))
    whole = tmp_path / "whole.zarr"
    parts = tmp_path / "parts.zarr"
    run_sweep(sweep, whole, execution=SYNCHRONOUS)

    first = run_sweep(sweep, parts, execution=SYNCHRONOUS, max_chunks=4)
    assert first.chunks_computed == 4
    assert first.chunks_pending == 2
    assert zarr.open_group(str(parts), mode="r").attrs["finalized"] is False
    second = resume_sweep(parts, execution=SYNCHRONOUS)
    assert second.chunks_computed == 2
    assert second.chunks_pending == 0
    assert sweep_bytes(whole) == sweep_bytes(parts)
    for name in ("attractor", "count"):
        stored = [zarr.open_group(str(p), mode="r")["tracks"][name][:] for p in (whole, parts)]
        assert np.array_equal(stored[0], stored[1])

    # A member lost before any of its chunks was written is created again.
    import shutil

    broken = tmp_path / "broken.zarr"
    run_sweep(sweep, broken, execution=SYNCHRONOUS, max_chunks=1)
    shutil.rmtree(broken / "p001")
    resume_sweep(broken, execution=SYNCHRONOUS)
    assert sweep_bytes(whole) == sweep_bytes(broken)


def test_existing_sweep_is_refused(tmp_path, small_config):
    path = tmp_path / "sweep.zarr"
    sweep = Sweep(small_config.with_sampling(n_initial=100), "system.beta", (1.0, 2.0))
    run_sweep(sweep, path, execution=SYNCHRONOUS)
    with pytest.raises(AtlasError, match="already exists"):
        run_sweep(sweep, path, execution=SYNCHRONOUS)
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(AtlasError, match="not a basins sweep or atlas"):
        run_sweep(sweep, foreign, execution=SYNCHRONOUS, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "precious"


@pytest.mark.slow
def test_local_cluster_gives_identical_sweep(tmp_path, small_sweep):
    from basins.sweep import read_sweep

    path = tmp_path / "distributed.zarr"
    run_sweep(read_sweep(small_sweep), path,
              execution=Execution(n_workers=2, progress=False))
    assert sweep_bytes(path) == sweep_bytes(small_sweep)


# Attractor tracks


def test_tracks_keep_one_label(small_sweep):
    group = zarr.open_group(str(small_sweep), mode="r")
    members = group["tracks"]["attractor"][:]
    labels = group["tracks"].attrs["label"]
    assert len(set(labels)) == len(labels)
    for number, row in enumerate(members):
        for value_index, catalog_id in enumerate(row):
            if catalog_id < 0:
                continue
            catalog = read_catalog(member_paths(small_sweep)[value_index])
            assert catalog[catalog_id].label == labels[number]
    # Every catalog entry of every value belongs to exactly one track.
    for value_index, member in enumerate(member_paths(small_sweep)):
        ids = sorted(members[:, value_index][members[:, value_index] >= 0])
        assert ids == list(range(len(read_catalog(member))))


def test_births_follow_the_stability_threshold(small_sweep):
    """Bipartite 2:2 on v3 is unstable below beta = 0.1155 and stable above it.

    The threshold comes from the eigenvalues of the Jacobian on the tangent space,
    computed by central differences of the vector field (see the check below), so
    the sampled basin must be absent at beta = 0 and present from beta = 0.5 on.
    """
    events = zarr.open_group(str(small_sweep), mode="r").attrs["events"]
    births = {(e["label"], e["value"]) for e in events if e["event"] == "birth"}
    assert ("bipartite 2@+v3 2@-v3", 0.5) in births
    assert ("bipartite 3@+v3 1@-v3", 0.5) in births
    labels = zarr.open_group(str(small_sweep), mode="r")["tracks"].attrs["label"]
    assert "consensus 4@+v1" in labels
    consensus = labels.index("consensus 4@+v1")
    assert not any(e["track"] == consensus and e["value"] <= 1.0 for e in events)


def largest_tangent_rate(beta: float, state: np.ndarray) -> float:
    """Largest real part of the Jacobian's eigenvalues on the tangent space.

    The Jacobian of the multistable system's field at ``state`` is taken by central
    differences along an orthonormal basis of the tangent space of each token.
    """
    from basins import System, vector_field

    system = System(4, 3, beta, K={"diagonal": [1, 0.5, -3]}, V={"diagonal": [1, 0.5, -3]})
    directions = []
    for token, position in enumerate(state):
        basis, _ = np.linalg.qr(np.column_stack([position, np.eye(3)]))
        for axis in (1, 2):
            direction = np.zeros_like(state)
            direction[token] = basis[:, axis]
            directions.append(direction)
    jacobian = np.empty((len(directions), len(directions)))
    for k, direction in enumerate(directions):
        plus = state + 1e-6 * direction
        minus = state - 1e-6 * direction
        plus /= np.linalg.norm(plus, axis=1, keepdims=True)
        minus /= np.linalg.norm(minus, axis=1, keepdims=True)
        change = (vector_field(system, plus) - vector_field(system, minus)) / 2e-6
        jacobian[:, k] = [np.sum(change * d) for d in directions]
    return float(np.linalg.eigvals(jacobian).real.max())


def stability_threshold(state: np.ndarray) -> float:
    """The beta in [0, 3] above which ``state`` is stable, by bisection."""
    low, high = 0.0, 3.0
    assert largest_tangent_rate(low, state) > 0 > largest_tangent_rate(high, state)
    for _ in range(30):
        middle = (low + high) / 2
        if largest_tangent_rate(middle, state) < 0:
            high = middle
        else:
            low = middle
    return high


E1, E3 = np.eye(3)[0], np.eye(3)[2]
BIPARTITE_STATES = {
    "bipartite 2@+v3 2@-v3": np.array([E3, E3, -E3, -E3]),
    "bipartite 3@+v3 1@-v3": np.array([E3, E3, E3, -E3]),
    "bipartite 2@+v1 2@-v1": np.array([E1, E1, -E1, -E1]),
    "bipartite 3@+v1 1@-v1": np.array([E1, E1, E1, -E1]),
}


def test_bipartite_threshold_from_the_jacobian():
    threshold = stability_threshold(BIPARTITE_STATES["bipartite 2@+v3 2@-v3"])
    assert 0.11 < threshold < 0.12
    assert largest_tangent_rate(0.0, BIPARTITE_STATES["bipartite 2@+v3 2@-v3"]) > 0.5
    # The consensus on v1 has the rates lambda_k - lambda_1 and -lambda_1 = -1/2 for
    # every beta (the oracle of the model), so it is always stable.
    consensus = np.array([E1, E1, E1, E1])
    assert largest_tangent_rate(0.0, consensus) == pytest.approx(-0.5, abs=1e-6)
    assert largest_tangent_rate(2.0, consensus) == pytest.approx(-0.5, abs=1e-6)


@pytest.mark.slow
def test_bipartite_basins_are_born_where_they_become_stable(tmp_path, small_config):
    """Each bipartite family is born at the first swept beta above its threshold."""
    values = parse_values("0:1:9")
    config = small_config.with_sampling(n_initial=3000, chunk_size=1500)
    path = tmp_path / "beta.zarr"
    run_sweep(Sweep(config, "system.beta", values), path,
              execution=Execution(cluster="synchronous", progress=False))
    group = zarr.open_group(str(path), mode="r")
    labels = group["tracks"].attrs["label"]
    present = group["tracks"]["attractor"][:] >= 0
    for label, state in BIPARTITE_STATES.items():
        threshold = stability_threshold(state)
        first_stable = min(v for v in values if v > threshold)
        mirror = label.replace("+", "*").replace("-", "+").replace("*", "-")
        mirror = mirror.replace("2@-v3 2@+v3", "2@+v3 2@-v3").replace("2@-v1 2@+v1", "2@+v1 2@-v1")
        for mirrored in sorted({label, mirror}):
            assert mirrored in labels, mirrored
            seen = [v for v, p in zip(values, present[labels.index(mirrored)]) if p]
            assert seen[0] == first_stable, (mirrored, threshold, seen)
            assert seen == [v for v in values if v >= first_stable], mirrored


def _catalog(states, signatures, counts):
    states = np.asarray(states, dtype=float)
    return CatalogSummary(
        signature=list(signatures),
        states=states,
        count=np.asarray(counts),
        label=[f"state {i}" for i in range(len(states))],
        class_code=np.zeros(len(states), dtype=np.int8),
    )


def test_gap_keeps_the_track_and_lists_events(small_config):
    e1, e3 = np.eye(3)[0], np.eye(3)[2]
    consensus = [e1, e1, e1, e1]
    drifted = consensus + np.array([0.0, 0.05, 0.0])
    drifted /= np.linalg.norm(drifted, axis=1, keepdims=True)
    bipartite = [e3, e3, -e3, -e3]
    sig_consensus = (0, "", ((4, 1, 1),))
    sig_bipartite = (1, "", ((2, 3, 1), (2, 3, -1)))
    catalogs = [
        _catalog([consensus, bipartite], [sig_consensus, sig_bipartite], [70, 30]),
        _catalog([drifted], [sig_consensus], [100]),
        _catalog([bipartite, consensus], [sig_bipartite, sig_consensus], [40, 60]),
    ]
    tracks = track_attractors([small_config] * 3, catalogs)
    assert len(tracks) == 2
    assert tracks[0].attractor.tolist() == [0, 0, 1]
    assert tracks[1].attractor.tolist() == [1, -1, 0]
    events = track_events(tracks, [1.0, 2.0, 3.0])
    assert [(e["track"], e["event"], e["value"], e["previous"]) for e in events] == [
        (1, "death", 2.0, 1.0),
        (1, "birth", 3.0, 2.0),
    ]


def test_far_state_starts_a_new_track(small_config):
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    signature = (0, "", ((4, 1, 1),))
    catalogs = [
        _catalog([[e1] * 4], [signature], [10]),
        _catalog([[e2] * 4], [signature], [10]),
    ]
    tracks = track_attractors([small_config] * 2, catalogs)
    assert [t.attractor.tolist() for t in tracks] == [[0, -1], [-1, 0]]


# Command line


def test_sweep_command_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep.zarr"
    arguments = ["-q", "sweep", "example:multistable", "--param", "system.beta",
                 "--values", "1:2:2", "--n-initial", "200", "--chunk-size", "100",
                 "--out", str(out), "--cluster", "synchronous", "--no-progress"]
    assert main([*arguments, "--max-chunks", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"basins resume {out}" in printed
    assert main(["-q", "resume", str(out), "--cluster", "synchronous", "--no-progress"]) == 0
    resumed = capsys.readouterr().out
    assert "pending" not in resumed
    assert "Basin fractions by class" in resumed
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out == resumed
    assert main(arguments) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--param", "sampling.seed", "--values", "1,2"], "sweep parameter 'sampling.seed'"),
        (["--param", "system.beta", "--values", "0:1"], "expected START:STOP:COUNT"),
        (["--param", "system.beta", "--values=-1,1"], "system.beta = -1.0 is invalid"),
    ],
)
def test_sweep_command_rejects_bad_input(tmp_path, capsys, options, message):
    out = tmp_path / "sweep.zarr"
    status = main(["sweep", "example:multistable", *options, "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_sweep_help_explains_the_syntax(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "START:STOP:COUNT" in text
    assert "system.V.scale" in text
    assert "0:8:33 is 0, 0.25, ..., 8" in text


def test_sweep_in_use_is_refused(tmp_path, small_sweep):
    """A resume of a sweep whose writer lock a live process holds is refused."""
    import shutil

    from basins import AtlasError, Execution
    from basins.lock import acquire
    from basins.sweep import resume_sweep

    path = tmp_path / "copy.zarr"
    shutil.copytree(small_sweep, path)
    with acquire(path, "sweep"):
        with pytest.raises(AtlasError, match="in use"):
            resume_sweep(path, execution=Execution(cluster="synchronous", progress=False))
    summary = resume_sweep(path, execution=Execution(cluster="synchronous", progress=False))
    assert summary.chunks_pending == 0


def test_sweep_tasks_carry_member_tokens(tmp_path, small_config, monkeypatch):
    """Every task carries the token of its member's lock, taken for the sweep's
    duration, so a task that outlives its sweep writes nothing."""
    from basins import sweep as sweep_module
    from basins.errors import LockLostError
    from basins.lock import LOCK_NAME, read_lock
    from basins.mapping import compute_chunk

    config = small_config.with_sampling(n_initial=200, chunk_size=100)
    sweep = Sweep(config, "system.beta", (1.0, 2.0))
    path = tmp_path / "sweep.zarr"
    seen = []
    real_execute = sweep_module.execute

    def recording_execute(items, execution):
        for item in items:
            seen.append((item, read_lock(item.path).token))
        return real_execute(items, execution)

    monkeypatch.setattr(sweep_module, "execute", recording_execute)
    run_sweep(sweep, path, execution=SYNCHRONOUS, max_chunks=3)
    assert len(seen) == 3
    for item, token in seen:
        assert item.writer_token is not None
        assert item.writer_token == token
    assert not list(path.glob(f"*/{LOCK_NAME}"))

    # A late copy of a task whose chunk is still pending: the lock it names is gone.
    member = path / "p001"
    late = next(i for i, _ in seen if i.path == member)
    pending = sweep_module.WorkItem(member, late.config, 1, writer_token=late.writer_token)
    before = sorted(p.relative_to(member) for p in member.rglob("*"))
    with pytest.raises(LockLostError):
        compute_chunk(*pending.arguments(late.config.to_dict(), 1))
    assert sorted(p.relative_to(member) for p in member.rglob("*")) == before


def test_too_many_values_are_rejected(small_config):
    with pytest.raises(ConfigError, match="10001 sweep values are too many"):
        Sweep(small_config, "system.beta", tuple(np.linspace(1.0, 2.0, 10_001)))

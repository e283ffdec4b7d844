"""Stability certificates in the atlas catalog, and how reports flag them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from basins import Config, Execution, Sampling, run
from basins.report import basin_fractions
from basins.atlas import ChunkResult, create_atlas, finalize, read_catalog, write_chunk
from basins.classify import Matcher, classify_states, eigenspaces
from basins.cli import main
from basins.kernels import STATUS_CONVERGED
from basins.report import format_table
from basins.stability import VERDICT_NAMES

E1, E2, E3 = np.eye(3)


def test_catalog_stores_certificates(tmp_path, small_config):
    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=Execution(cluster="synchronous", progress=False))
    catalog = zarr.open_group(str(path), mode="r")["catalog"]
    k = len(catalog.attrs["label"])
    assert k >= 5
    assert catalog.attrs["stability_names"] == list(VERDICT_NAMES)
    assert catalog["stability"].shape == (k,)
    assert catalog["rate_real"].shape == (k, 4 * 2)
    assert catalog["rate_real"].metadata.dimension_names == ("attractor", "rate")
    assert catalog["attention"].metadata.dimension_names == (
        "attractor",
        "query",
        "key",
    )
    assert np.all(catalog["stability"][:] == 0)
    assert np.all(catalog["unstable_directions"][:] == 0)
    assert np.all(catalog["rate_real"][:] < 0)
    assert np.all(catalog["certified_speed"][:] < 1e-10)
    assert np.all(catalog["attention_rank"][:] <= catalog["n_clusters"][:])
    assert np.allclose(catalog["attention"][:].sum(axis=2), 1.0)
    assert {entry.stability for entry in read_catalog(path)} == {"stable"}


def _atlas_with_states(tmp_path, system, states):
    """Write the given final states as one converged chunk, as a task would."""
    config = Config(
        system=system,
        sampling=Sampling(n_initial=len(states), seed=0, chunk_size=len(states)),
    )
    path = tmp_path / "atlas.zarr"
    create_atlas(path, config)
    status = np.full(len(states), STATUS_CONVERGED, dtype=np.int8)
    labels = classify_states(
        states, status, Matcher(system, config.classification), eigenspaces(system.V), 0
    )
    write_chunk(
        path,
        config,
        ChunkResult(
            0,
            status,
            np.full(len(states), 100, dtype=np.int32),
            states,
            labels.local_label,
            labels.class_code,
        ),
    )
    finalize(path)
    return path


def test_unstable_attractor_is_flagged_in_every_report(
    tmp_path, multistable_system, capsys
):
    """A converged state at a saddle (consensus on e2) is kept in the catalog, but
    its certificate, the fraction table and the command line all mark it."""
    states = np.array([[E1] * 4, [E1] * 4, [E2] * 4])
    path = _atlas_with_states(tmp_path, multistable_system, states)

    catalog = zarr.open_group(str(path), mode="r")["catalog"]
    labels = catalog.attrs["label"]
    saddle = labels.index("consensus 4@+v2")
    assert VERDICT_NAMES[catalog["stability"][saddle]] == "unstable"
    assert catalog["unstable_directions"][saddle] == 1
    assert catalog["rate_real"][saddle, 0] == pytest.approx(0.5)

    rows = basin_fractions(path)
    flagged = [row for row in rows if row.flagged]
    assert [row.label for row in flagged] == ["consensus 4@+v2"]
    table = format_table(rows)
    assert "! unstable (1)" in table
    assert table.splitlines()[-1].startswith(
        f"warning: attractors {flagged[0].id} (unstable)"
    )

    assert main(["report", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "! unstable (1)" in printed
    assert "not certified stable" in printed


def test_stable_atlas_has_no_warning(tmp_path, multistable_system):
    states = np.array([[E1] * 4, [E3, E3, E3, -E3]])
    path = _atlas_with_states(tmp_path, multistable_system, states)
    table = format_table(basin_fractions(path))
    assert "warning" not in table
    assert "!" not in table
    assert table.count(" stable") == 2


def test_symmetric_attractor_is_stable_modulo_symmetry(tmp_path):
    from basins import System

    system = System(n_tokens=4, dim=3, beta=1.0, V={"identity": True, "scale": -1.0})
    tetrahedron = np.array(
        [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
    ) / np.sqrt(3)
    path = _atlas_with_states(tmp_path, system, np.array([tetrahedron]))
    catalog = zarr.open_group(str(path), mode="r")["catalog"]
    assert VERDICT_NAMES[catalog["stability"][0]] == "stable modulo symmetry"
    assert catalog["symmetry_directions"][0] == 3
    # Three rates along the orbit are set aside; the padding is NaN.
    assert np.isnan(catalog["rate_real"][0]).sum() == 3
    assert not basin_fractions(path)[0].flagged


def test_finalize_reads_chunk_by_chunk(tmp_path, small_config, monkeypatch):
    """Memory must not grow with the atlas: no read of a per-initial-condition array
    may span more than one chunk."""
    from basins.atlas import PER_IC_ARRAYS

    config = small_config.with_sampling(n_initial=500, chunk_size=100)
    path = tmp_path / "atlas.zarr"
    run(config, path, execution=Execution(cluster="synchronous", progress=False))
    whole = basin_fractions(path)
    reads = []
    original = zarr.Array.__getitem__

    def recording_getitem(self, selection):
        values = original(self, selection)
        if self.basename in PER_IC_ARRAYS:
            reads.append((self.basename, len(values)))
        return values

    monkeypatch.setattr(zarr.Array, "__getitem__", recording_getitem)
    finalize(path)
    assert basin_fractions(path) == whole
    assert {name for name, _ in reads} >= {"status", "steps", "local_label"}
    assert max(size for _, size in reads) <= 100

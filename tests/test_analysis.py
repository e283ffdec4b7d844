from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from basins import (
    ConfigError,
    Execution,
    basin_fractions,
    basin_slice,
    integrate,
    open_atlas,
    open_catalog,
    run,
    wilson_interval,
)
from basins.atlas import read_catalog, read_config
from basins.classify import CLASS_NAMES
from basins.report import basin_fractions as fraction_rows
from basins.sampling import initial_conditions
from basins.sweep import member_paths

from conftest import SWEEP_BETAS

SYNCHRONOUS = Execution(cluster="synchronous", progress=False)


@pytest.fixture(scope="module")
def partial_atlas(tmp_path_factory):
    """An atlas with 4 of 6 chunks computed, so -1 fill values are present."""
    from basins import Classification, Config, Integration, Sampling, System

    config = Config(
        system=System(4, 3, 2.0, K={"diagonal": [1.0, 0.5, -3.0]},
                      V={"diagonal": [1.0, 0.5, -3.0]}),
        integration=Integration(max_steps=5000),
        sampling=Sampling(n_initial=600, seed=3, chunk_size=100),
        classification=Classification(),
    )
    path = tmp_path_factory.mktemp("atlas") / "partial.zarr"
    run(config, path, execution=SYNCHRONOUS, max_chunks=4)
    return path


def direct_counts(path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in ("status", "attractor", "class")}


def test_single_atlas_dimensions_and_coordinates(partial_atlas):
    dataset = open_atlas(partial_atlas)
    assert dataset["status"].dims == ("ic",)
    assert dataset["final_state"].dims == ("ic", "token", "component")
    assert dataset.sizes == {"ic": 600, "token": 4, "component": 3}
    assert np.array_equal(dataset["ic"], np.arange(600))
    assert np.array_equal(dataset["token"], np.arange(4))
    assert np.array_equal(dataset["component"], np.arange(3))
    assert dataset.attrs["config"] == read_config(partial_atlas).to_dict()
    assert dataset.attrs["seed"] == 3
    assert dataset.attrs["attractor_labels"] == [e.label for e in read_catalog(partial_atlas)]


def test_single_atlas_lazy_integer_fill_values(partial_atlas):
    dataset = open_atlas(partial_atlas)
    for name in ("status", "steps", "attractor", "class", "final_state"):
        assert isinstance(dataset[name].data, da.Array), name
    assert dataset["status"].dtype == np.int8
    assert dataset["attractor"].dtype == np.int32
    assert dataset["class"].dtype == np.int8
    assert dataset["steps"].dtype == np.int32
    stored = direct_counts(partial_atlas)
    assert np.array_equal(dataset["status"].values, stored["status"])
    assert np.array_equal(dataset["attractor"].values, stored["attractor"])
    assert np.sum(dataset["status"].values == -1) == 200
    assert np.all(np.isnan(dataset["final_state"].values[400:]))


@pytest.mark.parametrize("by", ["attractor", "class", "alignment"])
def test_fractions_match_a_direct_count(partial_atlas, by):
    table = basin_fractions(partial_atlas, by=by)
    stored = direct_counts(partial_atlas)
    status, attractor = stored["status"], stored["attractor"]
    total = len(status)
    expected = {"max_steps": np.sum(status == 1), "nonfinite": np.sum(status == 2),
                "pending": np.sum(status == -1)}
    if by == "attractor":
        for entry in read_catalog(partial_atlas):
            expected[entry.label] = np.sum(attractor == entry.id)
    elif by == "class":
        for code, name in enumerate(CLASS_NAMES):
            expected[name] = np.sum((stored["class"] == code) & (status == 0))
    else:
        catalog = open_catalog(partial_atlas)
        for name, rows in catalog.groupby("alignment"):
            expected[name] = np.sum(np.isin(attractor, rows["id"]))
    assert set(table["label"]) == set(expected)
    for _, row in table.iterrows():
        assert row["count"] == expected[row["label"]], row["label"]
        assert row["total"] == total
        assert row["fraction"] == expected[row["label"]] / total
        assert (row["low"], row["high"]) == wilson_interval(int(row["count"]), total)
    assert table["count"].sum() == total


def test_fractions_agree_with_the_command_line_table(partial_atlas):
    table = basin_fractions(partial_atlas).set_index("label")
    for row in fraction_rows(partial_atlas):
        name = row.label or row.class_name
        assert table.loc[name, "count"] == row.count
        assert table.loc[name, "low"] == row.low
        assert table.loc[name, "high"] == row.high


def test_fractions_as_dataset(partial_atlas):
    dataset = basin_fractions(open_atlas(partial_atlas), by="class", as_dataset=True)
    assert isinstance(dataset, xr.Dataset)
    assert dataset["fraction"].dims == ("label",)
    assert float(dataset["fraction"].sum()) == pytest.approx(1.0)


def test_unknown_grouping_is_rejected(partial_atlas):
    with pytest.raises(ConfigError, match="by = 'colour' is invalid"):
        basin_fractions(partial_atlas, by="colour")


def test_catalog_table(partial_atlas):
    catalog = open_catalog(partial_atlas)
    entries = read_catalog(partial_atlas)
    assert list(catalog["id"]) == [e.id for e in entries]
    assert list(catalog["count"]) == [e.count for e in entries]
    assert list(catalog["label"]) == [e.label for e in entries]
    row = catalog.set_index("label").loc["bipartite 2@+v3 2@-v3"]
    assert row["alignment"] == "v3"
    assert row["multiplicity"] == (2, 2)
    assert row["positions"] == ("+v3", "-v3")


def test_sweep_dimensions_and_tracks(small_sweep):
    dataset = open_atlas(small_sweep)
    assert dataset["status"].dims == ("beta", "ic")
    assert dataset["final_state"].dims == ("beta", "ic", "token", "component")
    assert list(dataset["beta"].values) == list(SWEEP_BETAS)
    assert dataset.attrs["parameter"] == "system.beta"
    assert dataset["track"].dtype == np.int32
    assert isinstance(dataset["track"].data, da.Array)
    tracks = zarr.open_group(str(small_sweep), mode="r")["tracks"]["attractor"][:]
    for index, member in enumerate(member_paths(small_sweep)):
        attractor = zarr.open_group(str(member), mode="r")["attractor"][:]
        track = dataset["track"].isel(beta=index).values
        for number, row in enumerate(tracks):
            if row[index] >= 0:
                assert np.array_equal(track == number, attractor == row[index])
        assert np.array_equal(track < 0, attractor < 0)


def test_sweep_fractions_match_a_direct_count(small_sweep):
    table = basin_fractions(small_sweep, by="class")
    assert list(table.columns[:2]) == ["beta", "id"]
    for value, member in zip(SWEEP_BETAS, member_paths(small_sweep)):
        stored = direct_counts(member)
        rows = table[table["beta"] == value].set_index("label")
        for code, name in enumerate(CLASS_NAMES):
            expected = np.sum((stored["class"] == code) & (stored["status"] == 0))
            assert rows.loc[name, "count"] == expected
            assert rows.loc[name, "low"] == wilson_interval(int(expected), 400)[0]
        assert rows["fraction"].sum() == pytest.approx(1.0)
    by_track = basin_fractions(small_sweep, by="attractor")
    labels = open_atlas(small_sweep).attrs["track_labels"]
    assert len(by_track) == len(SWEEP_BETAS) * (len(labels) + 2)


def test_sweep_catalog_has_values_and_tracks(small_sweep):
    catalog = open_catalog(small_sweep)
    assert list(catalog.columns[:3]) == ["beta", "track", "id"]
    assert set(catalog["beta"]) == set(SWEEP_BETAS)
    labels = open_atlas(small_sweep).attrs["track_labels"]
    for _, row in catalog.iterrows():
        assert labels[row["track"]] == row["label"]


def test_open_atlas_of_a_foreign_path(tmp_path):
    from basins import AtlasError

    with pytest.raises(AtlasError, match="not found"):
        open_atlas(tmp_path / "missing.zarr")


def test_basin_slice_matches_direct_integration(partial_atlas):
    config = read_config(partial_atlas)
    data = basin_slice(config, token=1, ic=7, n_lat=6, n_lon=12, reference=partial_atlas)
    assert data["attractor"].dims == ("lat", "lon")
    assert data["attractor"].shape == (6, 12)
    assert data["lat"].values[0] == pytest.approx(-75.0)
    assert data["lon"].values[-1] == pytest.approx(165.0)

    base = initial_conditions(config.sampling.seed, 7, 1, 4, 3)[0]
    lat, lon = np.radians(data["lat"].values[2]), np.radians(data["lon"].values[5])
    state = base.copy()
    state[1] = [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]
    outcome = integrate(config.system, config.integration, state[None])
    assert data["status"].values[2, 5] == outcome.status[0]
    assert data["steps"].values[2, 5] == outcome.steps[0]

    catalog = read_catalog(partial_atlas)
    labels = data.attrs["labels"]
    assert labels[: len(catalog)] == [e.label for e in catalog]
    identifier = int(data["attractor"].values[2, 5])
    assert identifier >= 0
    from basins.classify import describe, eigenspaces

    described = describe(outcome.final_state[0], 0, eigenspaces(config.system.V),
                         config.classification)
    assert labels[identifier] == described.label


def test_basin_slice_needs_three_dimensions(small_config):
    from basins import Config, System

    flat = Config(system=System(3, 2, 1.0))
    with pytest.raises(ConfigError, match="system.dim = 2 is invalid for a basin slice"):
        basin_slice(flat)
    with pytest.raises(ConfigError, match="token = 4 is invalid"):
        basin_slice(small_config, token=4)


def test_tidy_table_types(partial_atlas):
    table = basin_fractions(partial_atlas)
    assert isinstance(table, pd.DataFrame)
    assert str(table["id"].dtype) == "Int64"
    assert table["id"].isna().sum() == 3  # max_steps, nonfinite, pending

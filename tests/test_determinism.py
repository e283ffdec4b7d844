"""One configuration and seed, many ways to run it: byte-identical results.

Every case is compared with a synchronous single-thread run in chunks of 100, in
every per-initial-condition array and in the catalog. ``local_label`` numbers the
attractors within each chunk, so it is compared only between runs of equal chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from helpers import assert_same_atlas, multistable_config

from basins import Execution, run
from basins.mapping import available_cores


@dataclass(frozen=True)
class Case:
    cluster: str
    chunk_size: int
    workers: int | None = None
    threads: int = 1
    marks: tuple = field(default=())

    @property
    def cores(self) -> int:
        return (self.workers or 1) * self.threads


CASES = {
    "synchronous 2 threads chunk 100": Case("synchronous", 100, threads=2),
    "synchronous 2 threads chunk 37": Case("synchronous", 37, threads=2),
    "synchronous 1 thread chunk 600": Case("synchronous", 600),
    "synchronous 1 thread chunk 7": Case("synchronous", 7),
    "local 1 worker 2 threads chunk 64": Case(
        "local", 64, workers=1, threads=2, marks=(pytest.mark.slow,)
    ),
    "local 2 workers 1 thread chunk 100": Case(
        "local", 100, workers=2, marks=(pytest.mark.slow,)
    ),
    "scheduler 2 workers chunk 37": Case(
        "scheduler", 37, workers=2, marks=(pytest.mark.slow,)
    ),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_config_module):
    small_config = small_config_module
    path = tmp_path_factory.mktemp("determinism") / "reference.zarr"
    run(
        small_config,
        path,
        execution=Execution(cluster="synchronous", numba_threads=1, progress=False),
    )
    return small_config, path


@pytest.fixture(scope="module")
def small_config_module():
    return multistable_config(n_initial=600, chunk_size=100, seed=3)


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=case.marks) for name, case in CASES.items()]
)
def test_result_is_independent_of_execution(name, reference, tmp_path):
    case = CASES[name]
    if case.cores > available_cores():
        pytest.skip(f"needs {case.cores} cores, this machine has {available_cores()}")
    config, reference_path = reference
    config = config.with_sampling(chunk_size=case.chunk_size)
    path = tmp_path / "atlas.zarr"
    if case.cluster == "scheduler":
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=case.workers, threads_per_worker=1, dashboard_address=None
        ) as cluster:
            execution = Execution(
                scheduler=cluster.scheduler_address,
                numba_threads=case.threads,
                progress=False,
            )
            run(config, path, execution=execution)
    else:
        execution = Execution(
            cluster=case.cluster,
            n_workers=case.workers,
            numba_threads=case.threads,
            progress=False,
        )
        run(config, path, execution=execution)
    assert_same_atlas(path, reference_path, same_chunking=case.chunk_size == 100)

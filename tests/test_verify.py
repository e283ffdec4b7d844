from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import assert_same_atlas, file_snapshot, multistable_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basins import (
    AtlasError,
    Execution,
    resume,
    run,
)
from basins.atlas import TASK_ARRAYS, pending_chunks
from basins.cli import EXIT_INVALID_ATLAS, main
from basins.verify import verify_atlas

SYNCHRONOUS = Execution(cluster="synchronous", numba_threads=1, progress=False)
DAMAGED_CHUNK = 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory, request) -> Path:
    """A finished atlas of 200 initial conditions in 4 chunks."""
    config = multistable_config(n_initial=200, chunk_size=50, seed=5)
    path = tmp_path_factory.mktemp("verify") / "reference.zarr"
    run(config, path, execution=SYNCHRONOUS)
    return path


@pytest.fixture
def copy(reference, tmp_path) -> Path:
    target = tmp_path / "copy.zarr"
    shutil.copytree(reference, target)
    return target


def chunk_file(path: Path, name: str, chunk: int) -> Path:
    trailing = ("0", "0") if name == "final_state" else ()
    return path.joinpath(name, "c", str(chunk), *trailing)


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def empty(file: Path) -> None:
    file.write_bytes(b"")


def flip_bit(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x04
    file.write_bytes(bytes(data))


def scramble(file: Path) -> None:
    file.write_bytes(np.random.default_rng(0).bytes(file.stat().st_size))


def delete(file: Path) -> None:
    file.unlink()


DAMAGE = {
    "truncated": truncate,
    "emptied": empty,
    "bit flipped": flip_bit,
    "scrambled": scramble,
    "deleted": delete,
}
ARRAYS = (*TASK_ARRAYS, "attractor", "class")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", ARRAYS)
def test_damaged_chunk_is_detected_and_repaired(copy, reference, name, damage, capsys):
    DAMAGE[damage](chunk_file(copy, name, DAMAGED_CHUNK))

    verification = verify_atlas(copy)
    assert not verification.valid
    if name in TASK_ARRAYS:
        assert pending_chunks(copy) == [DAMAGED_CHUNK]
        if name == "status" and damage == "deleted":
            assert verification.chunks_not_computed == [DAMAGED_CHUNK]
        else:
            assert verification.chunks_damaged == [DAMAGED_CHUNK]
    else:
        assert pending_chunks(copy) == []
        assert any(name in problem for problem in verification.problems)
    assert main(["verify", str(copy)]) == EXIT_INVALID_ATLAS
    assert "is invalid or incomplete" in capsys.readouterr().out

    resume(copy, execution=SYNCHRONOUS)
    assert verify_atlas(copy).valid
    assert_same_atlas(copy, reference)


def test_valid_atlas_passes(reference, capsys):
    verification = verify_atlas(reference)
    assert verification.problems == []
    assert verification.notes == []
    assert verification.chunks_complete == 4
    assert main(["verify", str(reference)]) == 0
    assert "is valid: 4 chunks" in capsys.readouterr().out


def test_damaged_catalog_is_rebuilt(copy, reference):
    truncate(copy / "catalog" / "count" / "c" / "0")
    assert any("catalog" in problem for problem in verify_atlas(copy).problems)
    resume(copy, execution=SYNCHRONOUS)
    assert_same_atlas(copy, reference)


def test_wrong_catalog_counts(copy):
    counts = zarr.open_group(str(copy), mode="r+")["catalog"]["count"]
    counts[0] = counts[0] + 1
    problems = verify_atlas(copy).problems
    assert any(problem.startswith("attractor 0 has count") for problem in problems)


def test_invalid_status_code(copy):
    status = zarr.open_group(str(copy), mode="r+")["status"]
    status[60] = 7
    verification = verify_atlas(copy)
    assert verification.chunks_damaged == [1]
    assert "status holds invalid codes [7]" in verification.problems[0]


def test_invalid_attractor_id(copy):
    zarr.open_group(str(copy), mode="r+")["attractor"][3] = 999
    assert any("ids outside" in problem for problem in verify_atlas(copy).problems)


def test_configuration_that_disagrees_with_the_arrays(copy, capsys):
    group = zarr.open_group(str(copy), mode="r+")
    config = dict(group.attrs["config"])
    config["sampling"] = {**config["sampling"], "n_initial": 300}
    group.attrs["config"] = config
    verification = verify_atlas(copy)
    assert "implies (300,)" in verification.problems[0]
    assert main(["-q", "resume", str(copy), "--cluster", "synchronous"]) == 2
    assert "is invalid: array 'status' has shape (200,)" in capsys.readouterr().err


def test_unsafe_codec_is_never_decoded(copy):
    """An array naming a registered codec outside the allowed set is rejected.

    The codec records every decode, so the test shows that rejection happens before
    any chunk is decoded (a pickle codec would run code at that point).
    """
    from dataclasses import dataclass

    from zarr.abc.codec import BytesBytesCodec
    from zarr.registry import register_codec

    decoded = []

    @dataclass(frozen=True)
    class RecordingCodec(BytesBytesCodec):
        is_fixed_size = True

        @classmethod
        def from_dict(cls, data):
            return cls()

        def to_dict(self):
            return {"name": "test.recording"}

        async def _decode_single(self, chunk_bytes, chunk_spec):
            decoded.append(chunk_spec)
            return chunk_bytes

        async def _encode_single(self, chunk_bytes, chunk_spec):
            return chunk_bytes

        def compute_encoded_size(self, input_byte_length, chunk_spec):
            return input_byte_length

    register_codec("test.recording", RecordingCodec)
    metadata_file = copy / "status" / "zarr.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["codecs"].append({"name": "test.recording"})
    metadata_file.write_text(json.dumps(metadata))

    verification = verify_atlas(copy)
    assert "uses codec(s) 'test.recording'" in verification.problems[0]
    with pytest.raises(AtlasError, match="uses codec"):
        resume(copy, execution=SYNCHRONOUS)
    assert decoded == []


def test_link_out_of_the_atlas_is_refused(copy, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(copy / "final_state" / "c" / "2", outside)
    os.symlink(outside, copy / "final_state" / "c" / "2")
    chunk_file(copy, "status", 2).unlink()
    before = file_snapshot(outside)

    verification = verify_atlas(copy)
    assert any(
        "points outside the atlas" in problem for problem in verification.problems
    )
    with pytest.raises(AtlasError, match="symbolic link"):
        resume(copy, execution=SYNCHRONOUS)
    assert file_snapshot(outside) == before


def test_leftover_temporary_files_are_noted_and_removed(copy, reference):
    leftover = copy / "steps" / "c" / f"3.{'0' * 32}.partial"
    leftover.write_bytes(b"half a chunk")
    verification = verify_atlas(copy)
    assert verification.valid
    assert "1 temporary files of interrupted writes" in verification.notes[0]
    resume(copy, execution=SYNCHRONOUS)
    assert not leftover.exists()
    assert_same_atlas(copy, reference)


def test_unfinished_atlas_is_incomplete(tmp_path, small_config, capsys):
    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=SYNCHRONOUS, max_chunks=2)
    verification = verify_atlas(path)
    assert verification.chunks_not_computed == [2, 3, 4, 5]
    assert "4 of 6 chunks are not computed yet" in verification.problems[0]
    assert main(["verify", str(path)]) == EXIT_INVALID_ATLAS


def test_verify_of_something_else(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "absent.zarr")]) == EXIT_INVALID_ATLAS
    assert "not found" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("not an atlas")
    assert main(["verify", str(tmp_path)]) == EXIT_INVALID_ATLAS


def damage_file(data: bytes, kind: str, position: float) -> bytes | None:
    """Return damaged file contents (None deletes the file)."""
    at = int(position * max(len(data) - 1, 0))
    if kind == "truncate":
        return data[:at]
    if kind == "flip" and data:
        return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]
    if kind == "garbage json":
        return b'{"zarr_format": 3, "node_type": [1, 2'
    if kind == "other json":
        return b'{"zarr_format": 3, "node_type": "array", "shape": "x"}'
    return None


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_damage_never_escapes_as_a_traceback(reference, tmp_path, data):
    """Damage any file of an atlas: verify, report and resume report it cleanly."""
    copy = tmp_path / "copy.zarr"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(reference, copy)
    files = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    target = copy / data.draw(st.sampled_from(files))
    kind = data.draw(
        st.sampled_from(["truncate", "flip", "delete", "garbage json", "other json"])
    )
    damaged = damage_file(target.read_bytes(), kind, data.draw(st.floats(0, 1)))
    if damaged is None:
        target.unlink()
    else:
        target.write_bytes(damaged)

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        verified = main(["verify", str(copy)])
        reported = main(["report", str(copy)])
        resumed = main(
            ["-q", "resume", str(copy), "--cluster", "synchronous", "--no-progress"]
        )
    assert verified in (0, EXIT_INVALID_ATLAS)
    assert reported in (0, 2)
    assert resumed in (0, 2)
    if resumed == 0 and target.name != "zarr.json":
        assert verify_atlas(copy).valid
        assert_same_atlas(copy, reference)


def test_every_metadata_problem_is_listed(tmp_path, small_config, capsys):
    """Opening reports the first problem and points to verify, which lists them all."""
    import json

    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=Execution(cluster="synchronous", progress=False))
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"]["config"]["sampling"]["n_initial"] += 7
    (path / "zarr.json").write_text(json.dumps(root))
    status = main(["verify", str(path)])
    out = capsys.readouterr().out
    assert status == 3
    assert "'basins verify" not in out
    problems = [line for line in out.splitlines() if "but the stored configuration" in line]
    assert len(problems) == 6, out


def test_sweep_is_verified_member_by_member(tmp_path, small_config, capsys):
    from basins import Sweep, run_sweep

    path = tmp_path / "sweep.zarr"
    sweep = Sweep(small_config.with_sampling(n_initial=200, chunk_size=100),
                  "system.beta", (1.0, 2.0))
    run_sweep(sweep, path, execution=Execution(cluster="synchronous", progress=False))
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"atlas {path / 'p000'} is valid" in out
    assert f"atlas {path / 'p001'} is valid" in out

    next((path / "p001" / "status" / "c").iterdir()).write_bytes(b"damaged")
    assert main(["verify", str(path)]) == 3
    out = capsys.readouterr().out
    assert f"atlas {path / 'p000'} is valid" in out
    assert f"atlas {path / 'p001'} is invalid or incomplete" in out

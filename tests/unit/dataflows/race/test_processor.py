"""RaceProcessor's recovery snapshots: they carry their format, and a snapshot of another racewire
version is refused with a clear message (the flow exits with its recovery-mismatch status)."""

from __future__ import annotations

import pickle

import pytest

from dataflows.race.processor import SNAPSHOT_FORMAT, RaceProcessor, SnapshotMismatch
from infra.flow_cli import _recovery_mismatch


def test_a_snapshot_round_trips_with_its_format() -> None:
    proc = RaceProcessor("r1", 4.0)
    state = proc.__getstate__()
    assert state[0] == SNAPSHOT_FORMAT
    copy = pickle.loads(pickle.dumps(proc))
    assert copy.race_id == "r1" and copy.max_rate_hz == 4.0


@pytest.mark.parametrize("state", [["r1", 4.0], [SNAPSHOT_FORMAT - 1, "r1"], []])
def test_a_snapshot_of_another_version_is_refused_by_name(state: list[object]) -> None:
    proc = RaceProcessor.__new__(RaceProcessor)
    with pytest.raises(SnapshotMismatch, match="fresh recovery directory") as info:
        proc.__setstate__(state)
    wrapped = RuntimeError("error resuming the dataflow")
    wrapped.__cause__ = info.value
    assert "another racewire version" in (_recovery_mismatch(wrapped) or "")
    assert "another racewire version" in (_recovery_mismatch(RuntimeError(f"PyErr: SnapshotMismatch: {info.value}"))
                                          or "")

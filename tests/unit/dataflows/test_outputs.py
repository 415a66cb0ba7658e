"""The flow's outputs: the one rejection type and the dead letter it becomes."""

from __future__ import annotations

import pickle

from dataflows.connectors.kafka_source import MessageRef
from dataflows.outputs import Rejected
from dataflows.race.driver import DriverState
from schemas.model import Lap, Telemetry
from tests.support.race_builder import Race


def test_a_rejection_becomes_one_dead_letter_with_its_message() -> None:
    ref = MessageRef("f1.telemetry", 3, 42, b"r:1", b"\x00bad")
    rej = Rejected("cannot decode", "DECODE", "decode", race_id="r").attach(ref)
    letter = rej.dead_letter()
    assert (letter.source_topic, letter.key, letter.value, letter.partition, letter.offset) == (
        "f1.telemetry", b"r:1", b"\x00bad", 3, 42)
    assert (letter.reason, letter.error_type, letter.step, letter.race_id) == ("cannot decode", "DECODE", "decode", "r")
    assert pickle.loads(pickle.dumps(rej)) == rej


def test_the_race_state_rejects_with_the_same_type_and_its_step() -> None:
    r = Race(cars=2)
    out = r.feed(Telemetry("x", "r", 99, 1000, 1, 0.1, 0, 0, 100, 9000, 3, 50, False, False))
    assert len(out) == 1 and isinstance(out[0], Rejected)
    assert (out[0].step, out[0].race_id, out[0].error_type) == ("race-state", "r", "UNKNOWN_DRIVER")
    back = DriverState().update(Lap("r:lap:1:2", "r", 1, 2, 90_000, 90_000))
    assert isinstance(back, Rejected) and (back.step, back.race_id) == ("driver-state", "r")

"""The drills' verdict (``infra.drills.compare``): pure, so every rule is checked on small documents."""

from __future__ import annotations

from typing import Any

from infra.drills.compare import calls, compare_contents, count, diff_fields, keyed, one


def _contents(**redis: Any) -> dict[str, Any]:
    return {"race_id": "r", "redis": redis, "pg": {}, "outputs": {}}


def test_identical_contents_are_clean() -> None:
    doc = _contents(state=one({"lap": 5, "rows": [1, 2]}), events=keyed({"e1": {"a": 1}, "e2": {"a": 2}}))
    c = compare_contents(doc, doc)
    assert c.clean and (c.lost, c.duplicated, c.wrong) == (0, 0, 0)
    assert c.details()["redis.events"] == {"compared": 2}


def test_missing_duplicated_extra_and_changed_items_are_counted_and_named() -> None:
    ref = _contents(events=keyed({"e1": {"a": 1}, "e2": {"a": 2}, "e3": {"a": 3}}))
    got = _contents(events=keyed({"e1": {"a": 1}, "e2": {"a": 9}, "e4": {"a": 4}}, {"e1": 3}))
    c = compare_contents(ref, got)
    t = c.tallies["redis.events"]
    assert (t.lost, t.duplicated, t.differed, t.extra) == (1, 2, 1, 1)
    assert (c.lost, c.duplicated, c.wrong) == (1, 2, 2)
    assert t.first == ["lost e3", "extra e4", "3x e1", "e2: a"]
    assert not c.clean


def test_a_missing_store_loses_everything_it_should_hold() -> None:
    ref = _contents(state=one({"lap": 8}), lapchart=keyed({"1": [1, 2], "2": [2, 1]}))
    c = compare_contents(ref, {"race_id": "r", "redis": {}, "pg": {}, "outputs": {}})
    assert c.lost == 3


def test_volatile_fields_are_not_compared() -> None:
    ref = _contents(state=one({"lap": 8, "version": 100}))
    assert compare_contents(ref, _contents(state=one({"lap": 8, "version": 250}))).clean
    assert not compare_contents(ref, _contents(state=one({"lap": 7, "version": 100}))).clean


def test_output_duplicates_are_reported_apart() -> None:
    ref = {"race_id": "r", "redis": {}, "pg": {}, "outputs": {"events": keyed({"e1": {}, "e2": {}})}}
    got = {"race_id": "r", "redis": {}, "pg": {}, "outputs": {"events": keyed({"e1": {}, "e2": {}}, {"e1": 2})}}
    c = compare_contents(ref, got)
    assert c.duplicated == 0 and c.duplicated_output == 1 and c.clean


def test_strategy_calls_compare_content_only_where_the_same_cars_were_called() -> None:
    ref = _contents(strategy_history=calls({"1:4": {"action": "STAY_OUT"}, "1:7": {"action": "STAY_OUT"},
                                            "2:4": {"action": "BOX_THIS_LAP"}, "2:7": {"action": "STAY_OUT"}}))
    # after lap 2 car 7 got no call (the straggler grace fired): lost, and lap 2's content is not
    # compared; lap 1 called the same cars, so its changed call counts
    got = _contents(strategy_history=calls({"1:4": {"action": "STAY_OUT"}, "1:7": {"action": "BOX_THIS_LAP"},
                                            "2:4": {"action": "STAY_OUT"}}))
    t = compare_contents(ref, got).tallies["redis.strategy_history"]
    assert (t.lost, t.differed, t.extra) == (1, 1, 0)
    assert t.note is not None and "2" in t.note


def test_counts_lose_the_shortfall_and_only_note_a_surplus() -> None:
    ref = _contents(applied=count(60_569, "input records applied"))
    short = compare_contents(ref, _contents(applied=count(162, "input records applied")))
    assert short.lost == 60_407 and "60,407 input records applied fewer" in short.tallies["redis.applied"].first[0]
    more = compare_contents(ref, _contents(applied=count(60_600, "input records applied")))
    assert more.clean and more.tallies["redis.applied"].note is not None


def test_a_document_only_the_drill_run_has_is_wrong() -> None:
    c = compare_contents(_contents(state=one(None)), _contents(state=one({"lap": 1})))
    assert c.wrong == 1 and c.lost == 0


def test_diff_fields_names_nested_paths() -> None:
    assert diff_fields({"rows": [{"p": 1}, {"p": 2}]}, {"rows": [{"p": 1}, {"p": 3}]}) == ["rows[1].p"]
    assert diff_fields({"rows": [1]}, {"rows": [1, 2]}) == ["rows[len 1→2]"]
    assert diff_fields({"a": 1}, {"b": 1}) == ["a", "b"]

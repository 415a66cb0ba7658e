"""The producers' disk spool: order, bounds, persistence, one owner per spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflows.connectors.spool import SpoolFull, open_spool, record_bytes


def _rec(i: int, size: int = 10) -> tuple[str, bytes, bytes, None]:
    return ("f1.timing.lap", f"k{i % 3}".encode(), f"{i:0{size}d}".encode(), None)


def test_records_come_back_in_order_and_are_dropped_from_the_head(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, "p", max_bytes=1 << 20)
    spool.append([_rec(i) for i in range(5)])
    spool.append([_rec(i) for i in range(5, 12)])
    batch = spool.head(4)
    assert [r[2] for r, _ in batch] == [_rec(i)[2] for i in range(4)]
    spool.drop_through(batch[-1][1])
    assert len(spool) == 8
    assert [r[2] for r, _ in spool.head(100)] == [_rec(i)[2] for i in range(4, 12)]
    assert spool.bytes == sum(record_bytes(_rec(i)) for i in range(4, 12))
    spool.close()


def test_a_batch_that_does_not_fit_is_refused_whole(tmp_path: Path) -> None:
    one = record_bytes(_rec(0))
    spool = open_spool(tmp_path, "p", max_bytes=5 * one)
    spool.append([_rec(i) for i in range(4)])
    with pytest.raises(SpoolFull) as info:
        spool.append([_rec(4), _rec(5)])
    assert "RACEWIRE_PRODUCER_SPOOL_MAX_BYTES" in str(info.value)
    assert len(spool) == 4
    spool.append([_rec(4)])
    spool.append([_rec(5), _rec(6)], force=True)  # records taken back from librdkafka always fit
    assert len(spool) == 7 and spool.room() == 0
    spool.close()


def test_the_spool_survives_its_process_and_is_found_again_by_name(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, "ingest", max_bytes=1 << 20)
    headers = [("trace", b"\x00\xff"), ("empty", None)]
    spool.append([("t", None, b"v", headers), _rec(1)])
    spool.close()
    again = open_spool(tmp_path, "ingest", max_bytes=1 << 20)
    assert again.path.name == "ingest.sqlite3"
    records = [r for r, _ in again.head(10)]
    assert records[0] == ("t", None, b"v", headers)
    assert records[1] == _rec(1)
    again.close()


def test_a_spool_in_use_is_not_shared(tmp_path: Path) -> None:
    first = open_spool(tmp_path, "flow-out-0", max_bytes=1 << 20)
    second = open_spool(tmp_path, "flow-out-0", max_bytes=1 << 20)
    assert first.path.name == "flow-out-0.sqlite3"
    assert second.path.name == "flow-out-0-2.sqlite3"
    first.close()
    second.close()

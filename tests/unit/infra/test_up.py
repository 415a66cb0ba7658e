"""`racewire up`'s supervisor: restart with backoff, say so, give up on repeated fast crashes."""

from __future__ import annotations

from infra.up import Child, Policy, Supervisor


class Fake:
    """A child whose exit the test decides."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.code = None

    def poll(self) -> int | None:
        return self.code


def _supervisor(lines: list[str], max_crashes: int = 3, window_s: float = 60.0) -> Supervisor:
    return Supervisor(Policy(max_crashes=max_crashes, window_s=window_s, backoff_s=0.5, backoff_max_s=4.0),
                      say=lines.append)


def test_a_crashed_child_is_restarted_after_a_backoff_and_the_console_says_so() -> None:
    lines: list[str] = []
    sup = _supervisor(lines, max_crashes=5)
    fake = Fake()
    sup.add(Child("the race dataflow", fake.start, fake.poll, lambda: None))
    assert fake.starts == 1 and lines == ["starting the race dataflow ..."]
    fake.code = -9
    assert sup.check(now=100.0)
    assert lines[-1] == "the race dataflow exited with code -9; restarting it (attempt 1) in 0.5 s"
    assert sup.check(now=100.4) and fake.starts == 1  # still waiting
    assert sup.check(now=100.5) and fake.starts == 2
    fake.code = 1
    assert sup.check(now=101.0)
    assert lines[-1] == "the race dataflow exited with code 1; restarting it (attempt 2) in 1.0 s"
    assert sup.check(now=102.0) and fake.starts == 3


def test_repeated_fast_crashes_stop_with_a_message_naming_the_child() -> None:
    lines: list[str] = []
    sup = _supervisor(lines, max_crashes=3, window_s=60.0)
    fake = Fake()
    sup.add(Child("the serving layer", fake.start, fake.poll, lambda: None, hint="Is port 8000 free?"))
    now = 0.0
    for _ in range(2):
        fake.code = 3
        assert sup.check(now=now)
        now += 10
        assert sup.check(now=now)
    fake.code = 3
    assert not sup.check(now=now)
    assert sup.gave_up is not None
    assert lines[-1].startswith("the serving layer crashed 3 times within 60 s (last exit code 3); stopping")
    assert "Is port 8000 free?" in lines[-1]


def test_crashes_outside_the_window_do_not_add_up() -> None:
    lines: list[str] = []
    sup = _supervisor(lines, max_crashes=2, window_s=30.0)
    fake = Fake()
    sup.add(Child("the serving layer", fake.start, fake.poll, lambda: None))
    for t in (0.0, 100.0, 200.0):
        fake.code = 1
        assert sup.check(now=t)
        assert lines[-1].endswith("(attempt 1) in 0.5 s")
        assert sup.check(now=t + 1)


def test_a_race_source_that_finished_is_not_restarted() -> None:
    lines: list[str] = []
    sup = _supervisor(lines)
    fake = Fake()
    sup.add(Child("simulated race sim-1", fake.start, fake.poll, lambda: None, done_on_success=True))
    fake.code = 0
    assert sup.check(now=1.0) and sup.check(now=5.0)
    assert fake.starts == 1 and len(lines) == 1


def test_a_service_that_cannot_start_again_counts_as_a_crash_and_its_note_is_shown() -> None:
    lines: list[str] = []
    sup = _supervisor(lines, max_crashes=5)
    fake = Fake()
    failing = {"n": 1}

    def start() -> None:
        if failing["n"]:
            failing["n"] -= 1
            raise RuntimeError("port 19092 is in use")
        fake.start()

    sup.add(Child("the embedded Kafka broker", start, fake.poll, lambda: None,
                  after_restart=lambda: "the embedded Kafka broker is back on port 19092 with its topics"),
            start=False)
    fake.code = -9
    assert sup.check(now=0.0)
    assert sup.check(now=1.0)
    assert lines[-2] == "the embedded Kafka broker could not be started again: port 19092 is in use"
    assert lines[-1].startswith("the embedded Kafka broker exited with code 1; restarting it (attempt 2)")
    assert sup.check(now=3.0)
    assert lines[-1] == "the embedded Kafka broker is back on port 19092 with its topics"

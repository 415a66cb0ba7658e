"""Fault drills: the faults a live session meets, run against the real system and judged by what
it leaves behind (``racewire drill``; ``tests/drills`` runs them scaled down).

- :mod:`infra.drills.stack`: the services a drill owns, ``racewire up`` as a child, the monitor;
- :mod:`infra.drills.contents`: the final Redis, PostgreSQL and output-topic contents of a race;
- :mod:`infra.drills.compare`: those contents against an uninterrupted run's (pure);
- :mod:`infra.drills.runner`: the drills themselves, the reference run and the verdict;
- :mod:`infra.drills.cli`: the command.
"""

"""The sources of input: everything that turns some account of a race into racewire's input records
(:mod:`schemas.model`) and produces them to the input topics.

- :mod:`simulator.sources.base`: the common shape (:class:`~simulator.sources.base.Source`: a race id, records in
  event-time order, the drivers' codes), a recorded race (:class:`~simulator.sources.base.RecordedRace`),
  event time (:func:`~simulator.sources.base.record_ts`) and the race-control records every recorded
  source derives the same way;
- :mod:`simulator.sources.synthetic`: the synthetic race (the model lives in :mod:`simulator`) and
  ``racewire simulate``;
- :mod:`simulator.sources.laptables`: a real race from a lap table (tidy or FastF1);
- :mod:`simulator.sources.livetiming`: a capture of the official live-timing feed;
- :mod:`simulator.sources.produce`: records to Kafka, paced by session time or as fast as possible;
- :mod:`simulator.sources.options`: the command-line options the source commands share.

Where it sits: inside :mod:`simulator` (DESIGN.md's layer of "sources of input"; the top-level
folders are fixed), above the synthetic race model of the same package (:mod:`simulator.race`,
:mod:`simulator.track`, :mod:`simulator.truth`), which never imports it (a ``forbidden`` contract
in ``.importlinter``). The sources import that model, the resilient producer
(:mod:`dataflows.connectors.producer`) and the schemas; ``infra`` (``racewire replay``/``livetiming``
through the pipeline, ``racewire up``, benchmarks, drills) and ``serving`` import them. The next
sources (the live SignalR feed, OpenF1) are modules here with the same shape.
"""

"""The sources of input: everything that turns some account of a race into racewire's input records
(:mod:`schemas.model`) and produces them to the input topics.

- :mod:`sources.base`: the common shape (:class:`~sources.base.Source`: a race id, records in
  event-time order, the drivers' codes), a recorded race (:class:`~sources.base.RecordedRace`),
  event time (:func:`~sources.base.record_ts`) and the race-control records every recorded
  source derives the same way;
- :mod:`sources.synthetic`: the synthetic race (the model lives in :mod:`simulator`) and
  ``racewire simulate``;
- :mod:`sources.laptables`: a real race from a lap table (tidy or FastF1);
- :mod:`sources.livetiming`: a capture of the official live-timing feed;
- :mod:`sources.produce`: records to Kafka, paced by session time or as fast as possible;
- :mod:`sources.options`: the command-line options the source commands share.

Where it sits in the layering (``infra > serving > sources > simulator > dataflows > strategy >
schemas``, checked by ``lint-imports``): the sources import the synthetic race model
(:mod:`simulator`), the resilient producer (:mod:`dataflows.connectors.producer`) and the
schemas; they are imported by ``infra`` (``racewire replay``/``livetiming`` through the
pipeline, ``racewire up``, benchmarks, drills) and by ``serving`` (a simulated race through the
flow's logic reads event time from here). So the package goes above :mod:`simulator` and below
:mod:`serving`; a folder inside :mod:`simulator` would tie the race model to Kafka and the
command line.
"""

"""Strategy intelligence: models trained on real lap tables, a Numba Monte Carlo race simulator,
and the per-lap strategy calls built on them.

Layout (pure logic; no module here does I/O except the training/evaluation commands and the
artifact loader):

- ``circuits``    canonical circuit keys from any name a feed or a table uses
- ``data``        polars loading of lap tables in the ``laps_pool`` format
- ``features``    polars feature pipelines shared by training, evaluation and live prediction
- ``models``      :class:`StrategyModels`: versioned artifacts + rule-based fallback
- ``train``       ``racewire train``      (writes artifacts)
- ``evaluate``    ``racewire evaluate``   (lap-time model vs a naive baseline on held-out races)
- ``montecarlo``  Numba kernels: simulate the rest of a race many times
- ``plans``       candidate strategies, optimal strategy, comparison of strategies
- ``calls``       per-lap recommendations for every car (pit window, compound, undercut/overcut)
- ``bench``       ``racewire bench strategy``
"""

"""The benchmarks, in one place: ``racewire bench pipeline | sse | latency | history | strategy | idle``
(:mod:`infra.bench.cli`), with one shared harness (:mod:`infra.bench.harness`)."""

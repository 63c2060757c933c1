"""``streamrec bench``: throughput, freshness and index benchmarks (outside the default test run).

* :mod:`streamrec.benchmarks.load` builds a seeded, cached workload (model + encoded events) and drives
  it into Kafka, flat out or at a steady rate;
* :mod:`streamrec.benchmarks.naive_agent` is the textbook per-event Faust agent the worker is compared to;
* :mod:`streamrec.benchmarks.measure` samples CPU, RSS and consumer lag and turns arrivals into latencies;
* :mod:`streamrec.benchmarks.runner` runs one side (worker or naive agent) against the broker;
* :mod:`streamrec.benchmarks.index_bench` measures FAISS index types without Kafka (``--index-only``);
* :mod:`streamrec.benchmarks.profile` summarises a py-spy profile of the worker by kind of work;
* :mod:`streamrec.cli.bench` is the ``bench`` command.

Results and the commands that regenerate them: docs/performance.md.
"""

"""``python -m benchmarks.overhead``: the benchmark, or one of its timed processes (``hand``, ``loop``, ``peer``)."""

from benchmarks.overhead.cli import main

main()

"""What a benchmark's ``--save PATH`` writes: its measured figures with the command line, settings, machine and
date, one JSON file per benchmark under ``benchmarks/results/``, from which ``python -m benchmarks.docs`` writes
the tables of docs/performance.md.

A record::

    {"benchmark": "benchmarks.overhead", "command": "python -m benchmarks.overhead --repeats 1 --save ...",
     "date": "2026-12-07 17:20 UTC", "elapsed_s": 512.3, "settings": {...}, "machine": {...}, "results": {...}}

``settings`` are the options that shaped the measurement; ``results`` what the benchmark measured (its own
layout, read by its renderer in :mod:`benchmarks.docs`); ``machine`` the platform, CPU, CPU count, Python and
torch versions, the device, the process's nice value and the load average when it ended (the machine may be
shared: compare figures of one record only).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """What ran the benchmark: platform, CPU, CPU count, Python and torch versions, device (and GPU), the nice
    value, and the 1-minute load average now."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "nice": os.nice(0),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def save(
    path: Path,
    benchmark: str,
    argv: list[str],
    settings: dict[str, Any],
    results: dict[str, Any],
    elapsed_s: float,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write the record of one run of ``python -m benchmarks.<benchmark> <argv>`` to ``path`` and return it.

    Args:
        path: The JSON file (its folder is made).
        benchmark: The module's name under ``benchmarks``: ``overhead``, ``loop_overhead``...
        argv: The command-line arguments it ran with.
        settings: The options that shaped the measurement.
        results: What it measured.
        elapsed_s: How long the measurement took.
        device: ``cpu`` or ``cuda[:N]``.
    """
    record = {
        "benchmark": f"benchmarks.{benchmark}",
        "command": shlex.join(["python", "-m", f"benchmarks.{benchmark}", *argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(elapsed_s, 1),
        "settings": settings,
        "machine": machine(device),
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return record

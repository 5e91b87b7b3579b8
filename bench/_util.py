"""Helpers the benchmarks share: memory from /proc, percentiles, a timer and a plain-text table."""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str, status: Path | None = None) -> int | None:
    try:
        for line in (status or _STATUS).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Resident memory now (VmRSS), in MiB."""
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else _maxrss_kib()) / 1024


def peak_rss_mib() -> float:
    """Highest resident memory since start or since the last reset_peak_rss() (VmHWM), in MiB."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else _maxrss_kib()) / 1024


def peak_rss_mib_of(pid: int | None) -> float:
    """Another process's highest resident memory (VmHWM), in MiB; 0 when it cannot be read."""
    kib = _status_kib("VmHWM", Path(f"/proc/{pid}/status")) if pid else None
    return (kib or 0) / 1024


def reset_peak_rss() -> bool:
    """Start a new high-water mark, so each phase reports its own peak. False where Linux refuses."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    # Outside Linux there is no /proc; ru_maxrss is KiB on Linux but bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def file_size_mib(*paths: Path) -> float:
    """Total size of the files that exist (e.g. a SQLite database and its -wal file), in MiB."""
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (the same as numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Timer:
    """Wall-clock seconds of a block: `with timer() as t: ...` then `t.seconds`."""

    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0


@contextmanager
def timer() -> Iterator[Timer]:
    t = Timer()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - t.started


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "") -> None:
    """Columns padded to fit, numbers right-aligned; floats keep the text the caller formatted."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and rows != [] for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        cells = zip(values, widths, numeric, strict=False)
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in cells).rstrip()

    if title:
        print(f"\n{title}")
    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


__all__ = ["Timer", "file_size_mib", "peak_rss_mib", "percentile", "print_table", "reset_peak_rss",
           "rss_mib", "timer"]

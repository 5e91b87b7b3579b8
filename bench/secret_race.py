"""Benchmark: processes starting together on a fresh data directory, each creating the signing key (issue 14).

    python -m bench.secret_race                      # 1,000 trials, two processes each, before and after
    python -m bench.secret_race --trials 200 --processes 4

Each trial is a fresh folder; the processes wait on a barrier, then all call the key function at
once, as two `supportbot run`/`ingest` processes started together would. Counted per process call:
an empty key (the process would sign and check reply tokens with it), a crash (an exception: the
process would not start); per trial: disagreement (two processes holding different keys, so one
rejects the other's tokens). The baseline is the function as it was before issue 14, copied here,
run in the same invocation against the same kind of folders.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supportbot.app import desk_secret
from supportbot.config import Config


def before_issue_14(data_dir: Path) -> bytes:
    """desk_secret as it was: create with O_EXCL, write, and read back (the read can see an empty file)."""
    path = data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def after_issue_14(data_dir: Path) -> bytes:
    defaults = Config()
    return desk_secret(defaults.model_copy(update={"desk": defaults.desk.model_copy(update={"data_dir": data_dir})}))


VARIANTS: dict[str, Callable[[Path], bytes]] = {"before (O_EXCL, then read)": before_issue_14,
                                                "after (temp file, fsync, os.link)": after_issue_14}


def _starter(variant: str, base: str, trials: int, barrier: Any, results: Any) -> None:
    make_key = VARIANTS[variant]
    for trial in range(trials):
        barrier.wait()
        try:
            outcome = ("key", make_key(Path(base) / f"t{trial}").decode())
        except Exception as e:
            outcome = ("crash", type(e).__name__)
        results.put((trial, outcome))


def run_variant(variant: str, trials: int, processes: int, base: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_starter, args=(variant, str(base), trials, barrier, results))
               for _ in range(processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    per_trial: dict[int, list[tuple[str, str]]] = {}
    for _ in range(trials * processes):
        trial, outcome = results.get(timeout=300)
        per_trial.setdefault(trial, []).append(outcome)
    for worker in workers:
        worker.join()
    calls = [outcome for got in per_trial.values() for outcome in got]
    crashes = Counter(what for kind, what in calls if kind == "crash")
    return {
        "calls": len(calls),
        "empty": sum(1 for kind, what in calls if kind == "key" and not what),
        "crashes": sum(crashes.values()),
        "crash_kinds": dict(crashes),
        "disagreeing": sum(1 for got in per_trial.values()
                           if len({what for kind, what in got if kind == "key"}) > 1),
        "failed_trials": sum(1 for got in per_trial.values()
                             if any(kind == "crash" or not what for kind, what in got)
                             or len({what for _, what in got}) > 1),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=None, help="where the trial folders go (default: system temp)")
    args = parser.parse_args()
    print(f"{args.trials} trials, {args.processes} processes each, load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':36} {'calls':>6} {'empty keys':>10} {'crashes':>8} {'disagree':>9} {'bad trials':>10}  time")
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory(dir=args.tmp) as base:
            r = run_variant(variant, args.trials, args.processes, Path(base))
        kinds = ", ".join(f"{k} {v}" for k, v in r["crash_kinds"].items())
        print(f"{variant:36} {r['calls']:>6} {r['empty']:>10} {r['crashes']:>8} {r['disagreeing']:>9} "
              f"{r['failed_trials']:>10}  {r['seconds']:.1f} s{'  (' + kinds + ')' if kinds else ''}")


if __name__ == "__main__":
    main()

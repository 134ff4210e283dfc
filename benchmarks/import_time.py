"""Import cost of `tokenhub` beside `httpx`: wall time (median of fresh interpreters) and RSS."""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = 15
CODE = (
    "import time, resource\n"
    "t = time.perf_counter()\n"
    "import {module}\n"
    "dt = time.perf_counter() - t\n"
    "print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def measure(module: str) -> tuple[float, float]:
    times, rss = [], []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", CODE.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        times.append(float(out[0]))
        rss.append(int(out[1]) / 1024)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    baseline = measure("sys")
    rows = {m: measure(m) for m in ("httpx", "tokenhub", "tokenhub, httpx")}
    print(f"import cost, median of {RUNS} fresh interpreters (Python {sys.version.split()[0]})")
    print(f"{'module':<18}{'wall ms':>10}{'RSS MiB':>10}{'RSS over bare':>15}")
    for name, (t, r) in rows.items():
        print(f"{name:<18}{t * 1000:>10.1f}{r:>10.1f}{r - baseline[1]:>15.1f}")
    ratio = rows["tokenhub"][0] / rows["httpx"][0]
    print(f"tokenhub / httpx wall time: {ratio:.2f}x")


if __name__ == "__main__":
    main()

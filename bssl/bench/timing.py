"""Wall-clock latency of one call, and the peak resident memory of this process."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np


def summarize(samples_ms: List[float]) -> Dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "min_ms": float(a.min()),
        "mean_ms": float(a.mean()),
        "runs": int(a.size),
    }


def time_calls(fn: Callable[[Any], Any], x: Any, warmup: int, runs: int,
               budget_s: Optional[float] = None, min_runs: int = 3) -> Dict[str, Any]:
    """Call fn(x) `warmup` times untimed, then time `runs` calls one by one.

    `budget_s` bounds slow configurations: once it is spent (and at least `min_runs` calls are
    timed) the loop stops and the summary says how many runs were actually made.
    """
    for _ in range(max(0, warmup)):
        fn(x)
    samples: List[float] = []
    start = time.perf_counter()
    for i in range(max(1, runs)):
        t0 = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and i + 1 >= min_runs and time.perf_counter() - start > budget_s:
            break
    out = summarize(samples)
    out["samples_ms"] = [round(s, 4) for s in samples]
    return out


def peak_rss_kb() -> int:
    """Peak resident set of this process in KiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own address
    space. getrusage's ru_maxrss is not used there because Linux carries it over from the parent
    across fork+exec, so a worker started by a large parent would report the parent's peak.
    Elsewhere: ru_maxrss (KiB on Linux/BSD, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss // 1024) if sys.platform == "darwin" else int(rss)

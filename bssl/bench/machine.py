"""A description of the machine a benchmark ran on: CPU model, SIMD flags, threads, versions."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict

# flags that decide which kernel paths exist (DESIGN.md §6), and the bf16 units that decide whether
# bf16 autocast training can be faster than fp32 (oneDNN uses AMX / AVX512-BF16 when present)
RELEVANT_FLAGS = ("sse4_2", "popcnt", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                  "avx512_vpopcntdq", "avx512_bitalg", "avx_vnni", "avx512_bf16", "amx_bf16", "neon", "asimd",
                  "asimddp", "sve")


def _cpuinfo() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if ":" in line:
                    key, value = (s.strip() for s in line.split(":", 1))
                    info.setdefault(key, value)
    except OSError:
        pass
    return info


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except ImportError:
        return "not installed"


def describe_machine() -> Dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    model = info.get("model name") or info.get("Model") or platform.processor() or platform.machine()
    cpu_desc = model
    if info.get("cpu family") and info.get("model"):
        cpu_desc += f" (family {info['cpu family']}, model {info['model']})"
    return {
        "cpu": cpu_desc,
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "simd_flags": [f for f in RELEVANT_FLAGS if f in flags],
        "hypervisor": "hypervisor" in flags,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("torch", "onnxruntime", "tvm", "numpy")},
    }

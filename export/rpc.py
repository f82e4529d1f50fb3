"""On-device latency through TVM RPC: upload a bssl TVM library, run it remotely, time it.

A device runs `python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090` (or registers with a
tracker: `--tracker HOST:PORT --key KEY`); `run_remote` uploads the library, loads it in a
Relax VM on the remote CPU and uses the remote `time_evaluator`, so the numbers are the
device's own clock, not the network round trip.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import UserError


def parse_address(text: str, what: str = "--rpc") -> Tuple[str, int]:
    """'HOST:PORT' -> (host, port), UserError on anything else."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{what} {text!r} must look like HOST:PORT, e.g. 192.0.2.7:9090")
    return host, int(port)


def connect(host: Optional[str] = None, port: Optional[int] = None, tracker: Optional[Tuple[str, int]] = None,
            key: Optional[str] = None, timeout: float = 60.0):
    """An RPC session, directly (host, port) or through a tracker (tracker=(host, port), key)."""
    from tvm import rpc

    try:
        if tracker is not None:
            if not key:
                raise UserError("a tracker needs a device key (--key), the one the device registered with")
            return rpc.connect_tracker(*tracker).request(key, session_timeout=0, max_retry=3)
        if host is None or port is None:
            raise UserError("run_remote needs host and port, or tracker and key")
        return rpc.connect(host, int(port), session_timeout=0)
    except UserError:
        raise
    except Exception as exc:
        where = f"tracker {tracker[0]}:{tracker[1]} key {key}" if tracker else f"{host}:{port}"
        raise UserError(f"could not reach the TVM RPC endpoint {where} ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else 'no detail'}); "
                        "is `python -m tvm.exec.rpc_server` running there?") from None


def run_remote(lib_path, host: Optional[str] = None, port: Optional[int] = None, input: Optional[np.ndarray] = None,
               *, tracker: Optional[Tuple[str, int]] = None, key: Optional[str] = None, warmup: int = 3,
               runs: int = 20, number: int = 1) -> Dict[str, Any]:
    """Upload `lib_path`, run it on the remote CPU, return latency stats (ms) and the outputs' top-1.

    `input` defaults to a seeded random array of the shape recorded in model.json beside the library.
    """
    import tvm
    from tvm import relax

    lib_path = Path(lib_path)
    if not lib_path.is_file():
        raise UserError(f"TVM library {lib_path} does not exist; build it with `bssl export --format tvm`")
    if input is None:
        meta_path = lib_path.with_name("model.json")
        if not meta_path.is_file():
            raise UserError(f"no model.json beside {lib_path}; pass the input array explicitly")
        shape = json.loads(meta_path.read_text())["input_shape"]
        input = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    remote = connect(host, port, tracker, key)
    remote.upload(str(lib_path))
    lib = remote.load_module(lib_path.name)
    dev = remote.cpu()
    vm = relax.VirtualMachine(lib, dev)
    x = tvm.runtime.tensor(np.ascontiguousarray(input, dtype=np.float32), dev)
    # The stateful API: tuple outputs cannot cross RPC as one object, fields can.
    vm.set_input("main", x)
    vm.invoke_stateful("main")
    logits = vm.get_outputs("main")[0].numpy()
    timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=max(runs, 1), min_repeat_ms=0)
    for _ in range(max(warmup, 0)):
        vm.invoke_stateful("main")
    res = timer("main")
    times = np.asarray(res.results, dtype=np.float64) * 1e3
    # Drop every remote handle now: the server serves one session at a time, and a session kept
    # alive by lingering references would block the next connection.
    del timer, vm, lib, x, dev, remote
    gc.collect()
    return {
        "backend": "tvm-rpc", "endpoint": f"tracker {tracker[0]}:{tracker[1]}/{key}" if tracker else f"{host}:{port}",
        "runs": int(times.size), "mean_ms": float(times.mean()), "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)), "min_ms": float(times.min()), "std_ms": float(times.std()),
        "top1": logits.argmax(axis=1).tolist(),
    }

"""TVM RPC: the student cross-compiled for a remote device and timed there, with the device's
own clock (bssl.export.rpc, TVM's time_evaluator). `--rpc HOST:PORT` or `--tracker HOST:PORT --key KEY`.
Peak memory is not measured remotely (no process of ours runs there)."""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional

from . import BACKENDS, PrepareContext
from .tvm import TVMBinary, compile_libs
from ...errors import UserError
from ..models import ModelRef


def check_reachable(address: str, what: str, timeout_s: float) -> tuple:
    """(host, port) after a TCP connect that gives up after `timeout_s` with a UserError."""
    from ...export.rpc import parse_address

    host, port = parse_address(address, what)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"{what} {address} is unreachable ({type(exc).__name__}: {exc or 'timed out'}) after "
                        f"{timeout_s:g} s; start `python -m tvm.exec.rpc_server --host 0.0.0.0 --port {port}` on the "
                        "device (or its tracker) and check the address") from None
    return host, port


@BACKENDS.register("tvm-rpc")
class TVMRemote(TVMBinary):
    name = "tvm-rpc"
    description = "TVM on a remote device over RPC"
    install_hint = "pip install apache-tvm; pass --rpc HOST:PORT or --tracker HOST:PORT --key KEY"
    remote = True

    def availability(self) -> Optional[str]:
        why = super().availability()
        if why:
            return why
        if not (self.options.get("rpc") or self.options.get("tracker")):
            return "no device given; pass --rpc HOST:PORT or --tracker HOST:PORT --key KEY"
        return None

    def _endpoint(self) -> Dict[str, Any]:
        timeout = float(self.options.get("timeout_s", 10.0))
        if self.options.get("tracker"):
            if not self.options.get("key"):
                raise UserError("--tracker needs --key naming the device kind registered at the tracker")
            return {"tracker": check_reachable(self.options["tracker"], "--tracker", timeout), "key": self.options["key"]}
        host, port = check_reachable(self.options["rpc"], "--rpc", timeout)
        return {"host": host, "port": port}

    def preflight(self) -> None:
        self._endpoint()  # fail fast, before minutes of compiling

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        target = self.options.get("target", "aarch64")
        if ref.kind == "tvm":
            return super().prepare(ref, ctx)
        return compile_libs(ref, ctx, target)

    def measure(self, job: Dict[str, Any]) -> Dict[str, Any]:
        """Time each batch's library on the device; same result shape as a local worker."""
        import numpy as np
        import tvm
        from tvm import relax

        from ...export.rpc import connect
        from ..timing import summarize

        ep = self._endpoint()
        remote = connect(ep.get("host"), ep.get("port"), ep.get("tracker"), ep.get("key"))
        latency = {}
        rng = np.random.default_rng(job.get("seed", 0))
        libs = {int(b): p for b, p in job["artifact"]["libs"].items()}
        for i, batch in enumerate(job["batches"]):
            if batch not in libs:
                return {"error": f"no library for batch {batch} for the device"}
            remote.upload(libs[batch], target=f"b{batch}-model.so")
            dev = remote.cpu()
            vm = relax.VirtualMachine(remote.load_module(f"b{batch}-model.so"), dev)
            size = job["input_size"]
            x = tvm.runtime.tensor(rng.standard_normal((batch, 3, size, size), dtype=np.float32), dev)
            for _ in range(max(1, job["warmup"] if i == 0 else min(job["warmup"], 2))):
                vm["main"](x)
            runs = job["runs"] if i == 0 else max(3, job["runs"] // 4)
            # the device's own clock: one call per repeat, no network round trip inside the timing
            timer = vm.time_evaluator("main", dev, number=1, repeat=runs, min_repeat_ms=0)
            latency[str(batch)] = summarize([t * 1e3 for t in timer(x).results])
        where = f"tracker {ep['tracker'][0]}:{ep['tracker'][1]}/{ep['key']}" if ep.get("tracker") else \
            f"{ep['host']}:{ep['port']}"
        return {"latency": latency, "endpoint": where}

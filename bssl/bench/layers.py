"""Binary conv layers of a bssl student: packed kernels vs torch FP32 conv2d (vs LCE), side by side.

    bssl bench layers [MODEL] [--threads N] [--input-size S] [--runs R] [--backend lce]
    python benchmarks/bench_layers.py [--lce] [--threads 1 2] [--json out.json]   (same code)

Every BinaryConvBN of the model (ReActNet-A at 224 by default) is collected with its input
shape; each distinct layer is timed in one process, the measurements of torch and the kernels
interleaved so that load on a shared machine hits both alike (best of several samples each).
  torch    F.conv2d FP32 on the same shape (the faster of NCHW and channels_last)
  kernels  float NHWC in, sign bits of x + RSign bias packed, XNOR-popcount conv, fused
           alpha/BN float output, in one call (what bssl.deploy runs per unit);
           "conv" = the conv alone on already packed input
  lce      larq-compute-engine, in the larq environment (bssl.export.larq_env)
Sums over all layers (repeated layers counted as often as they occur) give the speed-ups. The
achieved binary MACs/s of the conv are compared with a register-only XOR+popcount peak loop on
the same core and path. Nothing is asserted: the table reports what was measured.

The LCE side (`lce_worker_main`) runs under the larq environment's python, which has neither
torch nor bssl (larq pins numpy<2): that python starts this file by path, so the module imports
only the standard library and numpy at the top and everything else inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

TARGETS = {"vs_torch": 12.0, "vs_lce": 30.0, "peak_fraction_3x3": 0.5}

# Single-threaded runs are timed in the thread's CPU time by default: on a shared machine the
# time a process spends descheduled then does not count, and on a quiet one it equals wall time.
# Multi-threaded runs need wall time (work on other threads is not the caller's CPU time).
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}


def clock_name(clock: str, threads: int) -> str:
    return clock if clock != "auto" else ("cpu" if int(threads) == 1 else "wall")


def collect_layers(model_name: str, input_size: int, width: float) -> List[Dict[str, Any]]:
    """Distinct binary conv layers of the model with how often each occurs."""
    import torch

    from bssl.models import build_model
    from bssl.nn import BinaryConvBN

    model = build_model(model_name, num_classes=1000, input_size=input_size, width=width).eval()
    seen: Dict[tuple, List[str]] = {}

    def hook(mod, args, _out, name):
        x = args[0]
        conv = mod.conv
        key = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), int(conv.out_channels), int(conv.kernel_size[0]),
               int(conv.stride[0]), int(conv.padding[0]))
        seen.setdefault(key, []).append(name)

    handles = [m.register_forward_hook(lambda m_, a, o, n=n: hook(m_, a, o, n))
               for n, m in model.named_modules() if isinstance(m, BinaryConvBN)]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for h in handles:
        h.remove()
    layers = []
    for (c, h, w, o, k, s, p), names in seen.items():
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        layers.append(dict(c=c, h=h, w=w, o=o, k=k, stride=s, pad=p, count=len(names), names=names,
                           macs=ho * wo * o * c * k * k))
    return layers


def best_time(fn, min_time: float, clock=time.perf_counter) -> float:
    """Seconds per call from one sample of >= min_time (calls doubled until long enough)."""
    n = 1
    while True:
        t = clock()
        for _ in range(n):
            fn()
        dt = clock() - t
        if dt >= min_time or n >= 1 << 16:
            return dt / n
        n *= 2


def peak(K, seconds: float = 0.02, samples: int = 10) -> float:
    """Best binary MACs/s of the register-only XOR+popcount loop over short runs (sampled like the layers)."""
    iters = 100_000
    clock = CLOCK["cpu"]  # one thread: its CPU time
    while True:  # grow the run until one lasts `seconds`
        t = clock()
        K.peak_xor_popcount(iters)
        if clock() - t >= seconds:
            break
        iters *= 2
    best = 0.0
    for _ in range(samples):
        t = clock()
        ops, _ = K.peak_xor_popcount(iters)
        best = max(best, ops / (clock() - t))
    return best


def run_lce(layers, threads, min_time, repeats, clock="auto", larq_python: Optional[os.PathLike] = None):
    """Time the layers in larq-compute-engine: this file's `lce_worker_main` under the larq python."""
    from bssl.errors import UserError
    from bssl.export import larq_env

    py = larq_env.larq_python(larq_python)
    with tempfile.TemporaryDirectory(prefix="bssl-lce-layers-") as td:
        spec, out = Path(td) / "spec.json", Path(td) / "out.json"
        spec.write_text(json.dumps({"layers": [{k: L[k] for k in ("c", "h", "w", "o", "k", "stride", "pad")} for L in layers],
                                    "threads": list(threads), "min_time": min_time, "repeats": repeats,
                                    "clock": clock}))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        r = subprocess.run([str(py), str(Path(__file__).resolve()), "--lce-worker", str(spec), str(out)],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            tail = "\n".join(r.stderr.strip().splitlines()[-15:])
            raise UserError(f"the LCE layer benchmark failed in {py}:\n{tail}")
        return json.loads(out.read_text())


def measure(K, layers, threads: int, min_time: float, repeats: int, seed: int = 0, clock: str = "auto",
            verbose: bool = True):
    import torch
    import torch.nn.functional as F

    clk = CLOCK[clock_name(clock, threads)]
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for L in layers:
        x = torch.randn(1, L["c"], L["h"], L["w"], generator=g)
        xcl = x.contiguous(memory_format=torch.channels_last)
        wt = torch.randn(L["o"], L["c"], L["k"], L["k"], generator=g)
        wcl = wt.contiguous(memory_format=torch.channels_last)
        bias = 0.1 * torch.randn(L["c"], generator=g)
        layer = K.PackedConv2d.from_float(wt, L["stride"], L["pad"], out="float",
                                          scale=torch.rand(L["o"], generator=g) + 0.5, shift=torch.randn(L["o"], generator=g))
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()  # what a packed model hands the next unit
        xp = K.pack_bits(x_nhwc, bias)
        s, p = L["stride"], L["pad"]
        fns = {
            "torch_nchw": lambda: F.conv2d(x, wt, stride=s, padding=p),
            "torch_cl": lambda: F.conv2d(xcl, wcl, stride=s, padding=p),
            "kernels": lambda: layer.apply_float(x_nhwc, bias, threads=threads),
            "conv": lambda: layer(xp, threads=threads),
        }
        for fn in fns.values():
            fn()
        best = {k: float("inf") for k in fns}
        for _ in range(repeats):  # interleaved, so machine load hits every candidate alike
            for k, fn in fns.items():
                best[k] = min(best[k], best_time(fn, min_time, clk))
        t_torch = min(best["torch_nchw"], best["torch_cl"])
        rows.append({**{k: v for k, v in L.items() if k != "names"}, "first": L["names"][0],
                     "torch_s": t_torch, "torch_nchw_s": best["torch_nchw"], "torch_cl_s": best["torch_cl"],
                     "kernels_s": best["kernels"], "conv_s": best["conv"]})
        if verbose:
            print(f"  t={threads} {L['k']}x{L['k']} s{s} {L['c']:>4}->{L['o']:<4} {L['h']:>3}x{L['w']:<3} "
                  f"torch {t_torch * 1e3:8.3f} ms  kernels {best['kernels'] * 1e3:7.3f} ms", flush=True)
    return rows


def summarize(rows, peak_macs=None):
    tot = lambda key: sum(r[key] * r["count"] for r in rows)  # noqa: E731
    macs = sum(r["macs"] * r["count"] for r in rows)
    out = {"torch_s": tot("torch_s"), "kernels_s": tot("kernels_s"), "conv_s": tot("conv_s"), "macs": macs}
    out["speedup_vs_torch"] = out["torch_s"] / out["kernels_s"]
    out["conv_speedup_vs_torch"] = out["torch_s"] / out["conv_s"]
    out["kernels_macs_per_s"] = macs / out["conv_s"]
    # the sum is dominated by the slowest torch layers; the geometric mean weighs every distinct layer alike
    out["geomean_layer_speedup_vs_torch"] = float(np.exp(np.mean([np.log(r["torch_s"] / r["kernels_s"]) for r in rows])))
    if all("lce_s" in r for r in rows):
        out["lce_s"] = tot("lce_s")
        out["speedup_vs_lce"] = out["lce_s"] / out["kernels_s"]
    r3 = [r for r in rows if r["k"] == 3]
    if r3 and peak_macs:
        m3 = sum(r["macs"] * r["count"] for r in r3)
        out["macs_per_s_3x3"] = m3 / sum(r["conv_s"] * r["count"] for r in r3)
        out["peak_fraction_3x3"] = out["macs_per_s_3x3"] / peak_macs
        out["min_peak_fraction_3x3_layer"] = min(r["macs"] / r["conv_s"] / peak_macs for r in r3)
        # 32-channel layers fill half of each 64-bit word: at most 50% of the peak in real MACs
        full = [r for r in r3 if r["c"] % 64 == 0]
        if full:
            out["min_peak_fraction_3x3_layer_c64"] = min(r["macs"] / r["conv_s"] / peak_macs for r in full)
    return out


def print_table(rows, threads, peak_macs, has_lce):
    hdr = f"{'layer':<26}{'n':>3}{'MMAC':>8}{'torch ms':>10}{'kern ms':>9}{'conv ms':>9}{'x torch':>8}{'GMAC/s':>8}{'%peak':>7}"
    if has_lce:
        hdr += f"{'lce ms':>9}{'x lce':>7}"
    print(f"\n== threads={threads} ==")
    print(hdr)
    for r in rows:
        name = f"{r['k']}x{r['k']} s{r['stride']} {r['c']}->{r['o']} @{r['h']}x{r['w']}"
        gm = r["macs"] / r["conv_s"]
        line = (f"{name:<26}{r['count']:>3}{r['macs'] / 1e6:>8.1f}{r['torch_s'] * 1e3:>10.3f}{r['kernels_s'] * 1e3:>9.3f}"
                f"{r['conv_s'] * 1e3:>9.3f}{r['torch_s'] / r['kernels_s']:>8.1f}{gm / 1e9:>8.0f}"
                f"{(100 * gm / peak_macs if peak_macs else float('nan')):>7.0f}")
        if has_lce:
            line += f"{r['lce_s'] * 1e3:>9.3f}{r['lce_s'] / r['kernels_s']:>7.1f}"
        print(line)


def print_summary(report: Dict[str, Any]) -> None:
    threads = [int(t) for t in report["runs"]]
    pk = report["peak_macs_per_s"]
    for t in threads:
        run = report["runs"][str(t)]
        print_table(run["layers"], t, pk if t == 1 else None, "lce_version" in report)
    print(f"\npeak XOR+popcount loop ({report['isa']}, 1 core): {pk / 1e9:.0f} G binary MACs/s")
    print(f"{'threads':>7}{'clock':>6}{'torch ms':>10}{'kern ms':>9}{'conv ms':>9}{'x torch':>9}{'geomean':>8}{'x lce':>7}"
          f"{'G MAC/s':>9}{'3x3 %peak':>10}{'min 3x3':>8}")
    for t in threads:
        run = report["runs"][str(t)]
        s = run["summary"]
        print(f"{t:>7}{run['clock']:>6}{s['torch_s'] * 1e3:>10.2f}{s['kernels_s'] * 1e3:>9.2f}{s['conv_s'] * 1e3:>9.2f}"
              f"{s['speedup_vs_torch']:>9.1f}{s['geomean_layer_speedup_vs_torch']:>8.1f}{s.get('speedup_vs_lce', float('nan')):>7.1f}"
              f"{s['kernels_macs_per_s'] / 1e9:>9.0f}{100 * s.get('peak_fraction_3x3', float('nan')):>10.0f}"
              f"{100 * s.get('min_peak_fraction_3x3_layer', float('nan')):>8.0f}")
    if "thread_scaling" in report:
        print("thread scaling of the kernels: " + ", ".join(f"{t}: {v:.2f}x" for t, v in report["thread_scaling"].items()))
    for k, v in (report.get("targets_met") or {}).items():
        print(f"  {'met    ' if v else 'NOT met'}  {k}")


def run_layers(model: str = "reactnet-a", input_size: int = 224, width: float = 1.0, threads: Sequence[int] = (1, 2),
               lce: bool = False, larq_python: Optional[os.PathLike] = None, isa: Optional[str] = None,
               min_time: float = 0.002, repeats: int = 15, clock: str = "auto", verbose: bool = True) -> Dict[str, Any]:
    """Measure every distinct binary conv of the model; return all numbers (the JSON of the report)."""
    import torch

    import bssl.kernels as K
    from bssl.bench.machine import describe_machine
    from bssl.errors import UserError

    threads = [int(t) for t in threads]
    if not threads or any(t < 1 for t in threads):
        raise UserError(f"threads must be >= 1, got {threads}")
    if not K.available():
        raise UserError("the bssl kernel library is not built; reinstall bssl (`pip install .`, or "
                        "`pip install -e . --no-build-isolation` in a checkout)")
    if isa:
        K.set_isa(isa)
    layers = collect_layers(model, input_size, width)
    if verbose:
        print(f"{model} @{input_size}: {sum(L['count'] for L in layers)} binary convs, {len(layers)} distinct, "
              f"{sum(L['macs'] * L['count'] for L in layers) / 1e9:.2f} G binary MACs; kernel path {K.get_isa()}",
              flush=True)
    lce_res = None
    if lce:
        if verbose:
            print("timing larq-compute-engine in its own venv ...", flush=True)
        lce_res = run_lce(layers, threads, min_time, repeats, clock, larq_python)

    peaks = [peak(K, min_time)]
    report: Dict[str, Any] = {"model": model, "input_size": input_size, "width": width, "isa": K.get_isa(),
                              "cpu": describe_machine()["cpu"], "torch": torch.__version__, "machine": platform.machine(),
                              "targets": TARGETS, "runs": {}}
    if lce_res:
        report["lce_version"] = lce_res["lce_version"]
    for t in threads:
        rows = measure(K, layers, t, min_time, repeats, clock=clock, verbose=verbose)
        peaks.append(peak(K, min_time))
        if lce_res:
            for r, lr in zip(rows, lce_res["results"]):
                r["lce_s"] = lr["seconds"][str(t)]
                r["lce_bconv2d"] = lr.get("lce_bconv2d")
        report["runs"][str(t)] = {"layers": rows, "clock": clock_name(clock, t)}
    pk = max(peaks)
    report["peak_macs_per_s"] = pk
    report["peak_samples"] = peaks
    for t in threads:
        run = report["runs"][str(t)]
        run["summary"] = summarize(run["layers"], pk if t == 1 else None)
    if len(threads) > 1:
        base = report["runs"][str(threads[0])]["summary"]["kernels_s"]
        report["thread_scaling"] = {str(t): base / report["runs"][str(t)]["summary"]["kernels_s"] for t in threads}
    if 1 in threads:
        s = report["runs"]["1"]["summary"]
        checks = {"sum >= 12x torch FP32 (1 thread)": s["speedup_vs_torch"] >= TARGETS["vs_torch"],
                  "all 3x3 layers together >= 50% of peak (1 thread)": s.get("peak_fraction_3x3", 0) >= TARGETS["peak_fraction_3x3"],
                  "every 3x3 layer >= 50% of peak (1 thread)": s.get("min_peak_fraction_3x3_layer", 0) >= TARGETS["peak_fraction_3x3"],
                  "every 3x3 layer with C % 64 == 0 >= 50% of peak (1 thread)":
                      s.get("min_peak_fraction_3x3_layer_c64", 0) >= TARGETS["peak_fraction_3x3"]}
        if "speedup_vs_lce" in s:
            checks["sum >= 30x LCE (1 thread)"] = s["speedup_vs_lce"] >= TARGETS["vs_lce"]
        report["targets_met"] = checks
    return report


def layers_markdown(data: Dict[str, Any]) -> str:
    lines = [f"{data.get('model')} @ {data.get('input_size')} px, kernel path {data.get('isa')}, "
             f"peak XOR+popcount {data.get('peak_macs_per_s', 0) / 1e9:.0f} G binary MAC/s (1 core)", ""]
    for t, run in (data.get("runs") or {}).items():
        rows = run.get("layers", [])
        has_lce = all("lce_s" in r for r in rows) and rows
        head = ["layer (k s cin->cout @hxw)", "n", "input shape", "BOPs (M)", "torch FP32 ms", "kernels ms", "conv ms",
                "speedup", "G MAC/s"] + (["LCE ms", "x LCE"] if has_lce else [])
        lines += [f"threads = {t} ({run.get('clock', 'wall')} clock)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for r in rows:
            cells = [f"{r['k']}x{r['k']} s{r['stride']} {r['c']}->{r['o']} @{r['h']}x{r['w']}", str(r["count"]),
                     f"1x{r['c']}x{r['h']}x{r['w']}", f"{r['macs'] / 1e6:.1f}", f"{r['torch_s'] * 1e3:.3f}",
                     f"{r['kernels_s'] * 1e3:.3f}", f"{r['conv_s'] * 1e3:.3f}", f"{r['torch_s'] / r['kernels_s']:.1f}x",
                     f"{r['macs'] / r['conv_s'] / 1e9:.0f}"]
            if has_lce:
                cells += [f"{r['lce_s'] * 1e3:.3f}", f"{r['lce_s'] / r['kernels_s']:.1f}x"]
            lines.append("| " + " | ".join(cells) + " |")
        s = run.get("summary") or {}
        if s:
            extra = f", {s['speedup_vs_lce']:.1f}x LCE" if "speedup_vs_lce" in s else ""
            lines += ["", f"all binary convs: torch {s['torch_s'] * 1e3:.2f} ms, kernels {s['kernels_s'] * 1e3:.2f} ms "
                          f"({s['speedup_vs_torch']:.1f}x torch{extra}), {s['kernels_macs_per_s'] / 1e9:.0f} G MAC/s", ""]
    return "\n".join(lines) + "\n"


def layer_report(threads: int = 1, runs: int = 15, warmup: int = 0, out_dir: os.PathLike | str = "runs/bench",
                 report_path: Optional[os.PathLike | str] = None, backends: Optional[List[str]] = None,
                 model: str = "reactnet-a", input_size: int = 224, width: float = 1.0,
                 verbose: bool = True) -> Dict[str, Any]:
    """Run the per-layer measurement; return its numbers plus `markdown`, and write JSON + Markdown.

    `runs` is the samples per candidate (best kept); LCE columns are added when `backends` names
    lce (or is None and the larq environment exists). `warmup` is accepted for a uniform
    signature: every candidate is warmed up before it is timed. `verbose` prints a line per layer.
    """
    from bssl.export import larq_env
    from bssl.utils import atomic_path, write_json

    out_dir = Path(out_dir)
    want_lce = ("lce" in backends) if backends else larq_env.find_larq_python() is not None
    data = run_layers(model=model, input_size=input_size, width=width, threads=[threads], lce=want_lce,
                      repeats=max(1, runs), verbose=verbose)
    json_path = Path(report_path) if report_path else out_dir / "layers.json"
    write_json(json_path, data)
    md = layers_markdown(data)
    with atomic_path(out_dir / "layers.md") as tmp:
        tmp.write_text("# Per-layer binary convolutions\n\n" + md)
    return {**data, "markdown": md, "files": {"json": str(json_path), "markdown": str(out_dir / "layers.md")}}


def main(argv=None) -> int:
    """The per-layer benchmark as a script: progress, tables and targets on stdout, numbers in --json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="reactnet-a")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--lce", action="store_true",
                    help="also time larq-compute-engine (the larq environment, created if missing; see bssl.export.larq_env)")
    ap.add_argument("--isa", default=None, help="force a kernel path (default: best for this CPU)")
    ap.add_argument("--min-time", type=float, default=0.002, help="seconds per timing sample (short samples dodge preemption on a busy machine)")
    ap.add_argument("--repeats", type=int, default=15, help="samples per candidate (best is kept)")
    ap.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                    help="auto: thread CPU time for 1 thread (robust to a busy machine), wall time otherwise")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    if any(t < 1 for t in args.threads):
        ap.error("--threads must be >= 1")

    from bssl.errors import UserError
    from bssl.export import larq_env
    from bssl.utils import write_json

    try:
        if args.lce and larq_env.find_larq_python() is None:
            venv = larq_env.default_venv()
            print(f"creating {venv} for larq-compute-engine (shared with the lce export) ...", flush=True)
            larq_env.create(venv)
        report = run_layers(model=args.model, input_size=args.input_size, width=args.width, threads=args.threads,
                            lce=args.lce, isa=args.isa, min_time=args.min_time, repeats=args.repeats, clock=args.clock)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(report)
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


# ---- LCE side: runs under the larq environment's python (no torch, no bssl) ----

def _lce_layer_model(c, h, w, o, k, stride, pad):
    import larq as lq
    import tensorflow as tf

    inp = tf.keras.Input((h, w, c), batch_size=1)
    out = lq.layers.QuantConv2D(
        o, k, strides=stride, padding="same" if pad else "valid", pad_values=1.0,
        input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
        use_bias=False,
    )(inp)
    # BatchNorm after the conv is what LCE fuses into its output transform, as in ReActNet
    out = tf.keras.layers.BatchNormalization(momentum=0.9)(out)
    return tf.keras.Model(inp, out)


def _lce_best_time(fn, min_time, repeats, clock):
    fn()
    n = 1
    while True:  # calls per sample so one sample lasts >= min_time
        t = clock()
        for _ in range(n):
            fn()
        dt = clock() - t
        if dt >= min_time or n >= 1 << 16:
            break
        n *= 2
    best = dt / n
    for _ in range(repeats - 1):
        t = clock()
        for _ in range(n):
            fn()
        best = min(best, (clock() - t) / n)
    return best


def lce_worker_main(spec_path: str, out_path: str) -> int:
    """Time each layer of spec.json as a one-layer LCE model (larq QuantConv2D, ste_sign, pad_values=1).

    spec: {"layers": [{"c", "h", "w", "o", "k", "stride", "pad"}...], "threads": [...], "min_time": s,
    "repeats": n, "clock": "auto"|"cpu"|"wall"}; out.json gets seconds per call per thread count.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    spec = json.loads(Path(spec_path).read_text())
    rng = np.random.default_rng(0)
    results = []
    for L in spec["layers"]:
        model = _lce_layer_model(L["c"], L["h"], L["w"], L["o"], L["k"], L["stride"], L["pad"])
        model.layers[1].set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.layers[1].get_weights()])
        flat = lce.convert_keras_model(model)
        x = rng.standard_normal((1, L["h"], L["w"], L["c"])).astype(np.float32)
        # the layer must have become LCE's binary conv op, not a float conv
        row = {"layer": L, "seconds": {}, "lce_bconv2d": b"LceBconv2d" in flat}
        for t in spec["threads"]:
            interp = Interpreter(flat, num_threads=int(t))
            clock = CLOCK[clock_name(spec.get("clock", "auto"), t)]
            row["seconds"][str(t)] = _lce_best_time(lambda: interp.predict(x), spec["min_time"], spec["repeats"], clock)
        results.append(row)
        print(f"lce {L} {row['seconds']}", file=sys.stderr, flush=True)
    Path(out_path).write_text(json.dumps({"lce_version": getattr(lce, "__version__", "?"), "results": results}))
    return 0


if __name__ == "__main__":
    # started by path: drop this folder from sys.path so its modules (models.py, timing.py, ...)
    # cannot shadow what TensorFlow imports
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    if len(sys.argv) == 4 and sys.argv[1] == "--lce-worker":
        sys.exit(lce_worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())

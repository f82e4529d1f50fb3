"""Minimal runner for a bssl TVM export; copied next to model.so as run_model.py.

Needs only the TVM runtime and numpy on the device (no torch, no bssl):
    python run_model.py                      # random input, prints top-1 and latency
    python run_model.py --input x.npy --save out.npz --repeat 50
x.npy: float32 array of the shape in model.json (N, 3, H, W), normalised like training.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default=str(here / "model.so"))
    ap.add_argument("--input", help=".npy input; random when omitted")
    ap.add_argument("--save", help="write logits and features to this .npz")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs")
    args = ap.parse_args()
    meta = json.loads((Path(args.lib).parent / "model.json").read_text())
    shape = tuple(meta["input_shape"])
    x = np.load(args.input).astype(np.float32) if args.input else np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    if x.shape != shape:
        raise SystemExit(f"input shape {x.shape} does not match the library's {shape}")
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(args.lib), dev)
    inp = tvm.runtime.tensor(x, dev)
    logits, feats = (t.numpy() for t in vm["main"](inp))
    times = []
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        vm["main"](inp)
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"top-1: {logits.argmax(1).tolist()}  latency ms: p50 {np.percentile(times, 50):.3f}  "
          f"p90 {np.percentile(times, 90):.3f}")
    if args.save:
        np.savez(args.save, logits=logits, features=feats)


if __name__ == "__main__":
    main()

"""Time binary conv layers in larq-compute-engine (run inside the LCE venv, not bssl's).

Called by benchmarks/bench_layers.py as
    TF_USE_LEGACY_KERAS=1 .larq-venv/bin/python benchmarks/kernels_lce.py specs.json out.json
specs.json: {"layers": [{"c", "h", "w", "o", "k", "stride", "pad"}...], "threads": [1, 2],
"min_time": seconds, "repeats": n, "clock": "auto"|"cpu"|"wall"}. Each layer is a one-layer Keras model (larq QuantConv2D with
ste_sign input and kernel quantizers and pad_values=1, as a ReActNet binary conv), converted with
lce.convert_keras_model and timed with LCE's Interpreter; out.json gets seconds per call.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import larq as lq  # noqa: E402
import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: E402


def layer_model(c, h, w, o, k, stride, pad):
    inp = tf.keras.Input((h, w, c), batch_size=1)
    out = lq.layers.QuantConv2D(
        o, k, strides=stride, padding="same" if pad else "valid", pad_values=1.0,
        input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
        use_bias=False,
    )(inp)
    # BatchNorm after the conv is what LCE fuses into its output transform, as in ReActNet
    out = tf.keras.layers.BatchNormalization(momentum=0.9)(out)
    return tf.keras.Model(inp, out)


def best_time(fn, min_time, repeats, clock):
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


def main():
    spec = json.load(open(sys.argv[1]))
    rng = np.random.default_rng(0)
    results = []
    for L in spec["layers"]:
        model = layer_model(L["c"], L["h"], L["w"], L["o"], L["k"], L["stride"], L["pad"])
        model.layers[1].set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.layers[1].get_weights()])
        flat = lce.convert_keras_model(model)
        x = rng.standard_normal((1, L["h"], L["w"], L["c"])).astype(np.float32)
        # the layer must have become LCE's binary conv op, not a float conv
        row = {"layer": L, "seconds": {}, "lce_bconv2d": b"LceBconv2d" in flat}
        for t in spec["threads"]:
            interp = Interpreter(flat, num_threads=int(t))
            # as bench_layers.py: thread CPU time for one thread, wall time for more
            mode = spec.get("clock", "auto")
            clock = time.thread_time if (mode == "cpu" or (mode == "auto" and int(t) == 1)) else time.perf_counter
            row["seconds"][str(t)] = best_time(lambda: interp.predict(x), spec["min_time"], spec["repeats"], clock)
        results.append(row)
        print(f"lce {L} {row['seconds']}", file=sys.stderr, flush=True)
    json.dump({"lce_version": getattr(lce, "__version__", "?"), "results": results}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()

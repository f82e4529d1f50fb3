"""Runs inside the larq environment (no torch, no bssl): graph spec + weights -> Keras/larq -> .tflite.

    python larq_build.py SPEC.json WEIGHTS.npz OUT.tflite [--check INPUTS.npz OUTPUTS.npz]

SPEC.json is written by bssl.export.lce: a list of ops over NHWC tensors. The binary conv maps
onto larq exactly as LCE expects (docs/export.md):
    x + b (RSign bias)  ->  QuantConv2D(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                        pad_values=1, use_bias=False), kernel = sign(W)
                        ->  BatchNormalization(gamma = alpha*BN scale, beta = BN shift, mean 0, var 1)
which lce.convert_keras_model fuses into one LceBconv2d with its per-channel output transform.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BN_EPS = 1e-3


def build(spec, arrays):
    import larq as lq
    import tensorflow as tf

    layers = tf.keras.layers
    h, w = spec["input_size"]
    inp = tf.keras.Input((h, w, 3), name="input")
    env = {spec["input_name"]: inp}

    def const(key):
        return tf.constant(arrays[key])

    for op in spec["ops"]:
        kind, name = op["op"], op["name"]
        ins = [env[i] for i in op.get("inputs", [])]
        x = ins[0] if ins else None
        if kind == "conv2d":
            if any(op["padding"]):
                x = layers.ZeroPadding2D(tuple(op["padding"]), name=f"{name}_pad")(x)
            kernel = arrays[op["weight"]]
            conv = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=op["stride"], padding="valid",
                                 dilation_rate=op["dilation"], groups=op["groups"], use_bias=op["bias"] is not None,
                                 name=name)
            y = conv(x)
            conv.set_weights([kernel] + ([arrays[op["bias"]]] if op["bias"] is not None else []))
        elif kind == "bconv":
            k, s, p = op["kernel_size"], op["stride"], op["padding"]
            kernel = arrays[op["kernel"]]
            x = layers.Lambda(lambda t, b=const(op["bias"]): t + b, name=f"{name}_rsign_bias")(x)
            if p == 0:
                padding = "valid"
            elif s == 1 and p == k // 2 and k % 2 == 1:
                padding = "same"
            else:  # TF's "same" pads stride-2 convs asymmetrically: pad explicitly with +1
                x = layers.Lambda(lambda t, p=p: tf.pad(t, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=1.0),
                                  name=f"{name}_pad")(x)
                padding = "valid"
            conv = lq.layers.QuantConv2D(kernel.shape[-1], (k, k), strides=(s, s), padding=padding, pad_values=1.0,
                                         input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                         kernel_constraint="weight_clip", use_bias=False, name=name)
            y = conv(x)
            conv.set_weights([kernel])
            bn = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_transform")
            y = bn(y)
            o = kernel.shape[-1]
            bn.set_weights([arrays[op["scale"]], arrays[op["shift"]], np.zeros(o, np.float32),
                            np.full(o, 1.0 - BN_EPS, np.float32)])
        elif kind == "add":
            y = layers.Add(name=name)(ins)
        elif kind == "add_const":
            y = layers.Lambda(lambda t, c=const(op["const"]): t + c, name=name)(x)
        elif kind == "mul_const":
            y = layers.Lambda(lambda t, c=const(op["const"]): t * c, name=name)(x)
        elif kind == "prelu":
            act = layers.PReLU(shared_axes=[1, 2] if op["rank"] == 4 else None, name=name)
            y = act(x)
            alpha = arrays[op["alpha"]]
            act.set_weights([np.broadcast_to(alpha, act.get_weights()[0].shape).astype(np.float32)])
        elif kind == "relu":
            y = layers.ReLU(name=name)(x)
        elif kind == "clip":
            y = layers.Lambda(lambda t, lo=op["min"], hi=op["max"]: tf.clip_by_value(t, lo, hi), name=name)(x)
        elif kind == "avgpool":
            y = layers.AveragePooling2D(op["kernel"], op["stride"], padding="valid", name=name)(x)
        elif kind == "maxpool":
            p = op["padding"]
            if any(p):
                x = layers.Lambda(lambda t, p=p: tf.pad(t, [[0, 0], [p[0], p[0]], [p[1], p[1]], [0, 0]],
                                                        constant_values=-3.0e38), name=f"{name}_pad")(x)
            y = layers.MaxPooling2D(op["kernel"], op["stride"], padding="valid", name=name)(x)
        elif kind == "concat":
            y = layers.Concatenate(axis=-1, name=name)(ins)
        elif kind == "gap":
            y = layers.GlobalAveragePooling2D(keepdims=op["keepdims"], name=name)(x)
        elif kind == "flatten":
            y = layers.Flatten(name=name)(x)
        elif kind == "dense":
            kernel = arrays[op["kernel"]]
            dense = layers.Dense(kernel.shape[1], use_bias=op["bias"] is not None, name=name)
            y = dense(x)
            dense.set_weights([kernel] + ([arrays[op["bias"]]] if op["bias"] is not None else []))
        else:
            raise SystemExit(f"larq_build: unknown op {kind!r} in the graph spec")
        env[name] = y
    outputs = [env[n] for n in spec["outputs"]]
    return tf.keras.Model(inp, outputs, name="bssl_student")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--check", nargs=2, metavar=("INPUTS", "OUTPUTS"))
    args = ap.parse_args()
    import larq_compute_engine as lce

    spec = json.load(open(args.spec))
    arrays = dict(np.load(args.weights))
    model = build(spec, arrays)
    flatbuffer = lce.convert_keras_model(model)
    with open(args.out, "wb") as fh:
        fh.write(flatbuffer)
    print(json.dumps({"lce_ops": _lce_ops(flatbuffer)}))
    if args.check:
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        x = np.load(args.check[0])["x"].transpose(0, 2, 3, 1).astype(np.float32)  # NCHW -> NHWC
        keras_out = [np.asarray(o) for o in model(x, training=False)]
        interp = Interpreter(flatbuffer, num_threads=1)
        got = []
        for i in range(len(x)):
            out = interp.predict(x[i:i + 1])
            got.append(out if isinstance(out, list) else [out])
        lce_out = [np.concatenate([g[j] for g in got]) for j in range(len(got[0]))]
        # Match TFLite outputs to the Keras outputs (order is not guaranteed) by shape and value.
        ordered = []
        for ref in keras_out:
            cands = [o for o in lce_out if o.shape == ref.shape]
            ordered.append(min(cands, key=lambda o: float(np.abs(o - ref).max())))
        np.savez(args.check[1], logits=ordered[0], features=ordered[1], keras_logits=keras_out[0])


def _lce_ops(flatbuffer):
    """LCE's custom ops present in the file (their names are stored as custom op codes)."""
    return [n.decode() for n in (b"LceBconv2d", b"LceQuantize", b"LceDequantize") if n in flatbuffer]


if __name__ == "__main__":
    sys.exit(main())

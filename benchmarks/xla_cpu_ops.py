"""XLA:CPU against TensorFlow's own kernels: forward + backward time of the ops and towers of our step.

Why it exists: the compiled (jit_compile=True) step is our fastest at open_clip's ViT shapes, yet
the shipped configs' image tower is a CoAtNet, whose MBConv blocks use depthwise convolutions.
In one child process, on all cores with TensorFlow's default threads, each row times a
`tf.function` of (forward, sum of squares, gradient w.r.t. the input and the weights), plain and
with `jit_compile=True`, interleaved, median of `STEPS` calls after one warm-up (compilation is
excluded). Rows: single ops at the demo CoAtNet's shapes (batch 64, 14x14x64 maps), the same 3x3
depthwise convolution written as 9 shifted multiply-adds (an XLA-friendly formulation), and the
demo config's two towers (gin/demo.gin, batch 64).
"""
import os
import time

from benchmarks import common

STEPS, ROUNDS, BATCH = 10, 3, 64


def _depthwise_as_taps(x, w, stride: int):
    """SAME-padded k x k depthwise convolution of x [n, h, w, c] with w [k, k, c, 1] as k*k
    shifted multiply-adds (elementwise ops XLA fuses)."""
    import tensorflow as tf
    k, (h, wd) = int(w.shape[0]), x.shape[1:3]
    oh, ow = -(-h // stride), -(-wd // stride)
    pad_h, pad_w = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
    xp = tf.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2],
                    [0, 0]])
    out = 0.0
    for i in range(k):
        for j in range(k):
            out += xp[:, i:i + (oh - 1) * stride + 1:stride,
                      j:j + (ow - 1) * stride + 1:stride, :] * w[i, j, :, 0]
    return out


def _cases():
    """(name, fn(x) -> scalar, input, variables) at the demo CoAtNet's shapes."""
    import keras
    import tensorflow as tf
    from basic_tf import config, from_gin
    rand = tf.random.stateless_normal
    maps = rand([BATCH, 14, 14, 64], [0, 1])
    depthwise = tf.Variable(rand([3, 3, 64, 1], [0, 2]))
    dense_conv = tf.Variable(rand([3, 3, 64, 64], [0, 3]))
    tokens_x = rand([BATCH * 16, 256], [0, 4])
    kernel = tf.Variable(rand([256, 1024], [0, 5]))
    norm = keras.layers.LayerNormalization()
    norm.build(tokens_x.shape)
    cases = [
        ("depthwise 3x3 s1", lambda x: tf.nn.depthwise_conv2d(x, depthwise, [1] * 4, "SAME"),
         maps, [depthwise]),
        ("depthwise 3x3 s2", lambda x: tf.nn.depthwise_conv2d(x, depthwise, [1, 2, 2, 1], "SAME"),
         maps, [depthwise]),
        ("depthwise 3x3 s1 as 9 taps", lambda x: _depthwise_as_taps(x, depthwise, 1), maps,
         [depthwise]),
        ("conv 3x3 64->64", lambda x: tf.nn.conv2d(x, dense_conv, 1, "SAME"), maps, [dense_conv]),
        ("matmul 1024x256x1024", lambda x: tf.nn.gelu(x @ kernel), tokens_x, [kernel]),
        ("layer norm 1024x256", norm, tokens_x, norm.trainable_variables),
    ]
    config.parse(["demo"], ["make_dataset.file_pattern = 'unused'",
                            "make_dataset.tokenizer_path = 'unused'"])
    model = from_gin.dual_encoder()
    images = tf.random.stateless_uniform([BATCH, model.image_size, model.image_size, 3], [0, 6])
    token_ids = tf.random.stateless_uniform([BATCH, model.max_text_len], [0, 7], 1,
                                            model.text_tower.config.vocab_size, tf.int32)
    model({"images": images[:2], "token_ids": token_ids[:2]})
    cases += [("demo image tower (CoAtNet)", lambda x: model.encode_image(x, training=True),
               images, model.image_trainable_variables),
              ("demo text tower", lambda x: model.encode_text(x, training=True), token_ids,
               model.text_trainable_variables)]
    return cases


def measure(cfg: dict) -> dict:
    import numpy as np
    import tensorflow as tf
    rows = []
    for name, fn, x, variables in _cases():
        def step(x, fn=fn, variables=variables):
            with tf.GradientTape() as tape:
                if x.dtype.is_floating:
                    tape.watch(x)
                loss = tf.reduce_sum(tf.square(fn(x)))
            sources = ([x] if x.dtype.is_floating else []) + list(variables)
            return [tf.convert_to_tensor(g) for g in tape.gradient(loss, sources)
                    if g is not None]  # e.g. the text tower's unused position rows
        fns = {"plain": tf.function(step), "xla": tf.function(step, jit_compile=True)}
        times, compile_s = {k: [] for k in fns}, {}
        for k, f in fns.items():
            start = time.perf_counter()
            [g.numpy() for g in f(x)]
            compile_s[k] = time.perf_counter() - start
        for _ in range(ROUNDS):
            for k, f in fns.items():
                for _ in range(STEPS):
                    start = time.perf_counter()
                    [g.numpy() for g in f(x)]
                    times[k].append(time.perf_counter() - start)
        ms = {k: 1000 * float(np.median(t)) for k, t in times.items()}
        rows.append({"op": name, "plain_ms": round(ms["plain"], 2), "xla_ms": round(ms["xla"], 2),
                     "xla_over_plain": round(ms["xla"] / ms["plain"], 2),
                     "xla_first_call_s": round(compile_s["xla"], 2)})
        print(f"  {name}: plain {ms['plain']:.2f} ms, XLA {ms['xla']:.2f} ms", flush=True)
    return {"rows": rows}


def run() -> dict:
    payload = common.run_child("benchmarks.xla_cpu_ops", {})
    for row in payload["rows"]:
        print(f"  {row['op']}: XLA / plain {row['xla_over_plain']}", flush=True)
    return dict(payload, batch=BATCH, load_average=round(os.getloadavg()[0], 2))


def table(payload: dict) -> str:
    rows = [(r["op"], r["plain_ms"], r["xla_ms"], f"{r['xla_over_plain']}x",
             r["xla_first_call_s"]) for r in payload["rows"]]
    return (common.markdown_table(
        ["op (forward + backward)", "plain ms", "XLA ms", "XLA / plain", "XLA first call s"], rows)
        + f"\n\nBatch {payload['batch']}; 1-minute load average {payload['load_average']} at the "
        "end of the run.")


if __name__ == "__main__":
    common.child_main(measure)

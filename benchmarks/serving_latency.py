"""SavedModel `classify` latency (p50, p95) per request size, loaded as a server would load it.

Child 1 builds the config's model from gin (untrained weights: latency does not depend on them),
trains a small SentencePiece model on the prompts and writes the serving SavedModel with
`basic_tf.export.export_for_serving` (10 Fashion-MNIST class names x 2 templates baked in).
Child 2, a fresh process that imports only TensorFlow and tensorflow_text (the custom-op
library every consumer needs), loads it with `tf.saved_model.load` and times the `classify`
signature on JPEG bytes (64x64 sources, decoded and resized in the graph) for several request
sizes. The ratio column is images/s at that request size over images/s at one image per request.
"""
import os
import shutil
import tempfile

from benchmarks import common

CONFIGS = [("tiny", ["models/tiny"], []), ("demo", ["demo"], [])]
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
               "bag", "ankle boot"]
TEMPLATES = ["a photo of a {c}.", "a picture of the {c}."]
REQUEST_SIZES = (1, 8, 32)
CALLS, WARMUP = 60, 5


def export(cfg: dict) -> dict:
    """Child 1: writes the SavedModel; returns its path."""
    import numpy as np
    from basic_tf import config
    from basic_tf.data import tokenizer
    from basic_tf.export import export_for_serving

    config.parse(cfg["gin"], cfg["bindings"])
    from basic_tf import from_gin
    model = from_gin.dual_encoder()
    model({"images": np.zeros((1, model.image_size, model.image_size, 3), np.float32),
           "token_ids": np.ones((1, model.max_text_len), np.int32)})
    prompts = [t.replace("{c}", c) for c in CLASS_NAMES for t in TEMPLATES]
    sp = tokenizer.train_sentencepiece(prompts * 20, os.path.join(cfg["work"], "spm"), 60)
    tok = tokenizer.Tokenizer(sp, model.max_text_len)
    path = export_for_serving(model, tok, os.path.join(cfg["work"], "export"), CLASS_NAMES,
                              TEMPLATES, model_name="bench", version=1, top_k=3)
    return {"path": path, "image_size": int(model.image_size)}


def serve(cfg: dict) -> dict:
    """Child 2: loads the SavedModel like a consumer and times `classify`."""
    import io
    import time

    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the model uses)
    from PIL import Image

    start = time.perf_counter()
    loaded = tf.saved_model.load(cfg["path"])
    load_s = time.perf_counter() - start
    classify = loaded.signatures["classify"]
    rng = np.random.default_rng(0)

    def jpeg():
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        return buf.getvalue()

    rows = []
    for n in cfg["sizes"]:
        images = tf.constant([jpeg() for _ in range(n)])
        for _ in range(cfg["warmup"]):
            classify(images=images)["scores"].numpy()
        times = []
        for _ in range(cfg["calls"]):
            t0 = time.perf_counter()
            classify(images=images)["scores"].numpy()
            times.append(time.perf_counter() - t0)
        times = np.array(times) * 1000.0
        rows.append({"request_size": n, "p50_ms": round(float(np.percentile(times, 50)), 2),
                     "p95_ms": round(float(np.percentile(times, 95)), 2),
                     "images_per_s": round(n / float(np.median(times)) * 1000.0, 1)})
    return {"load_s": round(load_s, 2), "rows": rows}


def measure(cfg: dict) -> dict:
    return export(cfg) if cfg["mode"] == "export" else serve(cfg)


def run() -> dict:
    tmp = os.path.join(common.RESULTS_DIR, "tmp")
    os.makedirs(tmp, exist_ok=True)
    out = []
    for name, gin_files, bindings in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            out.append(skipped)
            continue
        work = tempfile.mkdtemp(prefix="bench_serving_", dir=tmp)
        try:
            exported = common.run_child("benchmarks.serving_latency", dict(
                mode="export", gin=gin_files, bindings=bindings, work=work))
            served = common.run_child("benchmarks.serving_latency", dict(
                mode="serve", path=exported["path"], sizes=list(REQUEST_SIZES), calls=CALLS,
                warmup=WARMUP))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        single = served["rows"][0]["images_per_s"]
        for r in served["rows"]:
            r["throughput_vs_single"] = round(r["images_per_s"] / single, 2)
        out.append({"config": name, "image_size": exported["image_size"], **served})
        print(f"  {name}: " + ", ".join(f"{r['request_size']} img p50 {r['p50_ms']} ms "
                                        f"p95 {r['p95_ms']} ms" for r in served["rows"]),
              flush=True)
    return {"classes": len(CLASS_NAMES), "templates": len(TEMPLATES), "calls": CALLS,
            "configs": out}


def table(payload: dict) -> str:
    rows = []
    for c in payload["configs"]:
        if "skipped" in c:
            rows.append([c["config"]] + ["-"] * 5 + [f"skipped: {c['skipped']}"])
            continue
        for r in c["rows"]:
            rows.append([c["config"], r["request_size"], r["p50_ms"], r["p95_ms"],
                         r["images_per_s"], f"{r['throughput_vs_single']}x",
                         f"load {c['load_s']} s, model input {c['image_size']}px"])
    return (f"`classify` with {payload['classes']} classes x {payload['templates']} templates "
            f"baked in; {payload['calls']} timed calls per row.\n\n" + common.markdown_table(
                ["config", "images per request", "p50 ms", "p95 ms", "images/s",
                 "images/s vs 1 per request", "notes"], rows))


if __name__ == "__main__":
    common.child_main(measure)

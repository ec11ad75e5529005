"""Input pipeline pairs/s per core against the raw decode rate, open_clip's loader and the step.

Everything runs in one `python -m benchmarks input_pipeline` (add `--quick` for fewer timed
batches), each measurement in its own child process, on files written in the run
(benchmarks/input_data.py, nothing downloaded): the demo's records (28x28 PNG) and photo-like
images at 256 and 384 px as JPEG and WebP (quality 95), each set as our TFRecords (converted
from the tars by basic_tf.data.webdataset.convert_tars), img2dataset TFRecords and webdataset
tars. Rows, per image set (decoded, augmented, tokenized, batched pairs/s; per core = / the
machine's cores, which tf.data's pool and open_clip's workers use):

  raw decode     the limit: a plain tf.data map of the format's decoder (decode_jpeg /
                 decode_webp / decode_png) over the same encoded bytes held in memory,
                 AUTOTUNE parallelism, no determinism, batched; nothing else
  make_dataset   basic_tf.data.pipeline.make_dataset as it is (training view: random crop of
                 area 0.5-1 at 224 px, flip, caption pick, tokenize to 32, batch 64; the demo:
                 its gin config, batch 128) on our TFRecords and with
                 record_format='img2dataset' on img2dataset's
  tars direct    the graph-only tar reader experiment (benchmarks/tar_reader.py) -> the same
                 decode/crop/flip + tokenize + batch as make_dataset's; beside it, the same tail
                 on the converted TFRecords ("shards, same tail"): the issue's 20% test
  open_clip      open_clip_train.data.get_wds_dataset on the same tars, CPU, workers = cores,
                 same batch, image size and token length (benchmarks/openclip_loader.py,
                 torch venv of benchmarks/setup_openclip_data.sh)

The trainer row: tools/train.py (the shipped trainer: demo.gin, demo records, the ViT of
openclip_speed.COMPARISON_VIT['demo'], one micro-batch, batch 128, its own input pipeline)
against the bare step of benchmarks/steps.py at the same shapes on random tensors; each under
its thread settings (the trainer: demo.gin's cpu_threads.intra_op = 1 and TensorFlow's default;
the step: every common.TF_THREADS setting), the fastest kept. The trainer's pairs/s are its
progress line's examples/s of the fastest loop after the first (the first includes tracing).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import common

IMAGE_SIZE, SEQ_LEN, BATCH = 224, 32, 64          # realistic sets (BASIC-S's 224 px view)
SETS = [(256, "jpg"), (256, "webp"), (384, "jpg"), (384, "webp")]
EXAMPLES = 512                                     # per realistic set: 4 tars / shards of 128
DEMO_EXAMPLES, DEMO_BATCH = 4096, 128
TIMED_BATCHES, QUICK_BATCHES = 12, 5
MIN_SECONDS = float(os.environ.get("BENCH_INPUT_MIN_SECONDS", 3.0))  # per timed row
TRAINER_STEPS_PER_LOOP, TRAINER_LOOPS = 20, 3
TRAINER_THREADS = {"intra1 (demo.gin)": [], "default": ["cpu_threads.intra_op = None"]}
SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup_openclip_data.sh")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- child side (TensorFlow) -------------------------------------------------------------

def _time_batches(ds, warmup: int, batches: int, min_seconds: float = None) -> dict:
    """Pairs/s over at least `batches` batches and `min_seconds` (default MIN_SECONDS) after
    `warmup` batches."""
    min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    n = done = 0
    while done < batches or time.perf_counter() - start < min_seconds:
        batch = next(it)
        images = batch["images"] if isinstance(batch, dict) else batch
        n, done = n + int(images.shape[0]), done + 1
    seconds = time.perf_counter() - start
    return {"pairs_per_s": round(n / seconds, 1), "seconds": round(seconds, 2), "batches": done}


def _image_bytes(pattern: str):
    """The encoded images of our TFRecords as one tf.string [n] tensor."""
    import tensorflow as tf
    from basic_tf.data import schema
    ds = tf.data.TFRecordDataset(schema.list_shards(pattern))
    ds = ds.map(lambda r: schema.parse_example(r)[schema.IMAGE_KEY])
    return tf.concat(list(ds.batch(1024)), 0)


def raw_decode(images, ext: str, batch: int, warmup: int, batches: int) -> dict:
    """The decode rate limit: decode only, best tf.data settings (module doc)."""
    import tensorflow as tf
    decode = {"jpg": lambda b: tf.io.decode_jpeg(b, channels=3),
              "webp": lambda b: tf.io.decode_webp(b)[0, :, :, :3],
              "png": lambda b: tf.io.decode_png(b, channels=3)}[ext]
    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    return _time_batches(ds, warmup, batches)


def same_tail(samples, data, batch: int):
    """Samples {"image", "caption"} (one caption) -> make_dataset's training decode (random crop
    area 0.5-1, flip, stateless seeds by element number) + tokenize + batch + prefetch, without
    its accounting: what the tar reader is compared on, against the shards read the same way."""
    import tensorflow as tf
    from basic_tf.data import augment
    from basic_tf.data.tokenizer import Tokenizer
    tokenizer = Tokenizer(data.tokenizer_path, data.seq_len)

    def decode(index, s):
        seed = tf.stack([tf.constant(0, tf.int64), index])
        image = augment.decode_and_random_crop(s["image"], seed, data.image_size)
        return {"images": image, "caption": s["caption"]}

    ds = samples.shuffle(EXAMPLES, seed=0).enumerate()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda b: {"images": b["images"], "token_ids": tokenizer(b["caption"])},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shard_samples(pattern: str):
    import tensorflow as tf
    from basic_tf.data import schema
    files = schema.list_shards(pattern)
    ds = tf.data.Dataset.from_tensor_slices(files).repeat().interleave(
        tf.data.TFRecordDataset, cycle_length=min(8, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def parse(r):
        ex = schema.parse_example(r)
        return {"image": ex[schema.IMAGE_KEY], "caption": ex[schema.CAPTION_KEY][0]}
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _tar_samples(pattern: str):
    import tensorflow as tf
    from basic_tf.data import webdataset
    from benchmarks import tar_reader
    tars = webdataset.list_tars(pattern)
    ds = tf.data.Dataset.from_tensor_slices(tars).repeat().interleave(
        tar_reader.tar_samples, cycle_length=min(8, len(tars)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(lambda s: {"image": s["image"], "caption": s["caption"]})


def measure_set(cfg: dict) -> dict:
    """One realistic image set: raw decode, make_dataset on both TFRecord layouts, the tar
    reader and the converted shards through the same tail."""
    from basic_tf.data import pipeline
    from basic_tf.data.data_config import DataConfig
    warm, n = 3, cfg["batches"]
    data = DataConfig(image_size=IMAGE_SIZE, seq_len=SEQ_LEN,
                      tokenizer_path=cfg["tokenizer_path"])
    out = {"raw_decode": raw_decode(_image_bytes(cfg["basic_tf"]), cfg["ext"], BATCH, warm, n)}
    for name, pattern, record_format in (("make_dataset", cfg["basic_tf"], "basic_tf"),
                                         ("make_dataset_img2dataset", cfg["img2dataset"],
                                          "img2dataset")):
        out[name] = _time_batches(pipeline.make_dataset(
            None, data, file_pattern=pattern, global_batch_size=BATCH, shuffle_buffer=EXAMPLES,
            log_skipped=False, record_format=record_format), warm, n)
    out["tars_direct"] = _time_batches(same_tail(_tar_samples(cfg["tars"]), data, BATCH), warm, n)
    out["shards_same_tail"] = _time_batches(same_tail(_shard_samples(cfg["basic_tf"]), data,
                                                      BATCH), warm, n)
    return out


def measure_demo(cfg: dict) -> dict:
    """The demo records: raw PNG decode and make_dataset as demo.gin configures it."""
    from basic_tf import config, from_gin_data
    config.parse(["demo"], [])
    data = from_gin_data.data_config(tokenizer_path=cfg["tokenizer_path"])
    warm, n = 3, cfg["batches"]
    ds = from_gin_data.make_dataset_for(None, data, file_pattern=cfg["basic_tf"],
                                        global_batch_size=DEMO_BATCH, log_skipped=False)
    return {"raw_decode": raw_decode(_image_bytes(cfg["basic_tf"]), "png", DEMO_BATCH, warm,
                                     4 * n),
            "make_dataset": _time_batches(ds, warm, 4 * n)}


def write_data(cfg: dict) -> dict:
    """Writes every set under cfg["work"] -> their paths (no image bytes)."""
    from basic_tf import config
    from benchmarks import input_data
    config.parse(["demo"], [])  # the demo's caption templates
    demo = input_data.demo_set(cfg["work"], DEMO_EXAMPLES)
    sets = []
    for size, ext in SETS:
        s = input_data.realistic_set(cfg["work"], size, ext, EXAMPLES)
        sets.append({k: v for k, v in s.items() if k not in ("images", "captions")}
                    | {"ext": ext, "size": size})
        captions = s["captions"]
    tokenizer_path = input_data.train_tokenizer(captions * 4, os.path.join(cfg["work"], "spm"))
    demo = {k: v for k, v in demo.items() if k != "images"}
    return {"demo": demo, "sets": sets, "tokenizer_path": tokenizer_path}


def measure_step(cfg: dict) -> dict:
    """The bare step at the trainer row's shapes (benchmarks/steps.py, plain tf.function)."""
    from benchmarks import steps
    model, images, tokens = steps.build(["demo"], cfg["bindings"], DEMO_BATCH)
    return steps.time_step(steps.train_step(model), images, tokens, 2, cfg["steps"])


def measure(cfg: dict) -> dict:
    global MIN_SECONDS
    MIN_SECONDS = cfg.get("min_seconds", MIN_SECONDS)
    return {"write": write_data, "set": measure_set, "demo": measure_demo,
            "step": measure_step}[cfg["mode"]](cfg)


# ---- parent side -------------------------------------------------------------------------

def _openclip_python() -> str:
    proc = subprocess.run(["bash", SETUP], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{SETUP} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _run_openclip(python: str, cfg: dict) -> dict:
    import json
    proc = subprocess.run([python, "-m", "benchmarks.openclip_loader", "--child",
                           json.dumps(cfg)], capture_output=True, text=True, timeout=900,
                          cwd=REPO)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"open_clip loader child failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_trainer(demo: dict, bindings: list, model_dir: str) -> dict:
    """tools/train.py on the demo records -> the fastest loop's examples/s after the first."""
    steps = TRAINER_STEPS_PER_LOOP * TRAINER_LOOPS
    bindings = bindings + [
        f"make_dataset.file_pattern = '{demo['basic_tf']}'",
        f"make_dataset.tokenizer_path = '{demo['tokenizer_path']}'",
        "train.num_micro_batches = 1", f"TRAIN_STEPS = {steps}", "WARMUP_STEPS = 5",
        f"train.steps_per_loop = {TRAINER_STEPS_PER_LOOP}",
        f"train.checkpoint_interval = {steps}"]
    cmd = [sys.executable, "tools/train.py", "--gin_file=demo", f"--model_dir={model_dir}"]
    cmd += [f"--gin_bindings={b}" for b in bindings]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"tools/train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rates = [float(x) for x in re.findall(r"\| ([\d.]+) ex/s \|", proc.stderr)]
    if len(rates) < 2:
        raise RuntimeError(f"tools/train.py printed {len(rates)} progress lines:\n"
                           f"{proc.stderr[-3000:]}")
    return {"loop_pairs_per_s": rates, "pairs_per_s": max(rates[1:]),
            "wall_s": round(time.perf_counter() - start, 1)}


def _per_core(row: dict, cores: int) -> dict:
    return dict(row, per_core=round(row["pairs_per_s"] / cores, 1))


def run() -> dict:
    from benchmarks.openclip_speed import COMPARISON_VIT
    quick = "--quick" in sys.argv
    batches = QUICK_BATCHES if quick else TIMED_BATCHES
    min_seconds = 1.0 if quick else MIN_SECONDS
    cores = os.cpu_count()
    tmp = os.path.join(common.RESULTS_DIR, "tmp")
    os.makedirs(tmp, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_input_", dir=tmp)
    load = {"start": round(os.getloadavg()[0], 2)}
    try:
        data = common.run_child("benchmarks.input_pipeline", {"mode": "write", "work": work})
        print(f"  data written ({len(data['sets'])} sets + demo)", flush=True)
        try:
            python, openclip_error = _openclip_python(), None
        except RuntimeError as e:
            python, openclip_error = None, str(e).splitlines()[0]
        demo = common.run_child("benchmarks.input_pipeline", dict(
            data["demo"], mode="demo", batches=batches, min_seconds=min_seconds))
        rows = [{"set": data["demo"]["name"], "bytes_mean": data["demo"]["bytes_mean"],
                 "source": data["demo"]["source"], "batch": DEMO_BATCH,
                 **{k: _per_core(v, cores) for k, v in demo.items()}}]
        for s in data["sets"]:
            got = common.run_child("benchmarks.input_pipeline", dict(
                s, mode="set", batches=batches, min_seconds=min_seconds,
                tokenizer_path=data["tokenizer_path"]))
            row = {"set": s["name"], "bytes_mean": s["bytes_mean"], "batch": BATCH,
                   **{k: _per_core(v, cores) for k, v in got.items()}}
            if python:
                row["open_clip"] = _per_core(_run_openclip(python, dict(
                    tars="::".join(sorted(glob.glob(s["tars"]))), batch=BATCH,
                    image_size=IMAGE_SIZE, seq_len=SEQ_LEN, workers=cores,
                    warmup_batches=2 * cores, batches=batches, min_seconds=min_seconds)), cores)
            rows.append(row)
            print(f"  {s['name']}: " + ", ".join(f"{k} {row[k]['pairs_per_s']}" for k in row
                                                 if isinstance(row[k], dict)), flush=True)
        for row in rows:
            raw = row["raw_decode"]["pairs_per_s"]
            row["ratio_to_raw"] = round(row["make_dataset"]["pairs_per_s"] / raw, 2)
            if "open_clip" in row:
                row["ratio_to_open_clip"] = round(row["make_dataset"]["pairs_per_s"]
                                                  / row["open_clip"]["pairs_per_s"], 2)
            if "tars_direct" in row:
                row["tars_to_shards"] = round(row["tars_direct"]["pairs_per_s"]
                                              / row["shards_same_tail"]["pairs_per_s"], 2)
        vit = COMPARISON_VIT["demo"]
        trainer = {name: run_trainer(data["demo"], vit + extra, os.path.join(work, f"run{i}"))
                   for i, (name, extra) in enumerate(TRAINER_THREADS.items())}
        step = common.run_child_per_threads("benchmarks.input_pipeline", dict(
            mode="step", bindings=vit, steps=10 if quick else 20))
        best_trainer = max(trainer, key=lambda k: trainer[k]["pairs_per_s"])
        best_step = max(step, key=lambda k: step[k]["pairs_per_s"])
        trainer_row = {
            "trainer": dict(trainer[best_trainer], threads=best_trainer),
            "step": dict(step[best_step], threads=best_step),
            "trainer_by_threads": trainer, "step_by_threads": step, "batch": DEMO_BATCH,
            "bindings": vit + ["train.num_micro_batches = 1"]}
        trainer_row["ratio"] = round(trainer_row["trainer"]["pairs_per_s"]
                                     / trainer_row["step"]["pairs_per_s"], 2)
        print(f"  trainer {trainer_row['trainer']['pairs_per_s']} ({best_trainer}) vs step "
              f"{trainer_row['step']['pairs_per_s']} ({best_step}) pairs/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load["end"] = round(os.getloadavg()[0], 2)
    return {"cores": cores, "quick": quick, "timed_batches": batches, "image_size": IMAGE_SIZE,
            "seq_len": SEQ_LEN, "examples_per_set": EXAMPLES, "rows": rows,
            "trainer": trainer_row, "open_clip_error": openclip_error, "load_average": load}


def _rate(r: dict) -> str:
    return f"{r['pairs_per_s']:.0f} ({r['per_core']:.0f})"


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        tars = (f"{_rate(r['tars_direct'])} vs {_rate(r['shards_same_tail'])} = "
                f"{r['tars_to_shards']}x" if "tars_direct" in r else "-")
        theirs = (f"{_rate(r['open_clip'])}" if "open_clip" in r else
                  ("-" if "tars_direct" not in r else "not run"))
        rows.append([r["set"], f"{r['bytes_mean']:,}", r["batch"], _rate(r["raw_decode"]),
                     _rate(r["make_dataset"]), f"{r['ratio_to_raw']}x",
                     _rate(r["make_dataset_img2dataset"]) if "make_dataset_img2dataset" in r
                     else "-", tars, theirs, f"{r['ratio_to_open_clip']}x"
                     if "ratio_to_open_clip" in r else "-"])
    t = payload["trainer"]
    load = payload["load_average"]
    text = (f"Pairs/s (per core: / {payload['cores']} cores), {payload['timed_batches']} timed "
            f"batches per row; realistic sets: {payload['examples_per_set']} images each, "
            f"{payload['image_size']} px out, {payload['seq_len']} tokens. 1-minute load "
            f"average {load['start']} at the start, {load['end']} at the end.\n\n")
    text += common.markdown_table(
        ["images", "mean bytes", "batch", "raw decode (limit)", "make_dataset", "make_dataset"
         " / raw", "make_dataset img2dataset layout", "tars direct vs shards, same tail",
         "open_clip get_wds_dataset", "make_dataset / open_clip"], rows)
    if payload.get("open_clip_error"):
        text += f"\n\nopen_clip loader not run: {payload['open_clip_error']}"
    text += ("\n\nTrainer (tools/train.py, demo records, ViT of openclip_speed's demo row, "
             f"1 micro-batch, batch {t['batch']}): "
             f"{t['trainer']['pairs_per_s']} pairs/s ({t['trainer']['threads']}) against the bare "
             f"step's {t['step']['pairs_per_s']} ({t['step']['threads']}): "
             f"**{t['ratio']}x**. Per thread setting: trainer " + ", ".join(
                 f"{k} {v['pairs_per_s']}" for k, v in t["trainer_by_threads"].items())
             + "; step " + ", ".join(f"{k} {v['pairs_per_s']}"
                                      for k, v in t["step_by_threads"].items()) + ".")
    return text


if __name__ == "__main__":
    common.child_main(measure)

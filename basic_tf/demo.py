r"""`basic-demo --out DIR`: the whole system on real data in one command (gin/demo.gin).

    Fashion-MNIST (Debian package dataset-fashion-mnist)
    -> TFRecords, each image captioned with every training template x its class name
    -> SentencePiece vocabulary trained on those captions
    -> contrastive training (orbit loop, BASIC accumulation) with checkpoints in DIR/model
    -> zero-shot top-1 / top-5 / per-class accuracy on the test images, with the evaluation
       prompt templates of basic_tf/zeroshot (never used as training captions)
    -> TF Serving export (class names and templates baked in)
    -> DIR/report.json and a short printed report

Run again with the same DIR and every finished phase is reused: shards and vocabulary are kept,
training resumes from the last checkpoint (or does nothing when it is done), and evaluation and
export are redone only for a new checkpoint. Every knob is a gin binding of gin/demo.gin; change
the data knobs (images, templates, vocabulary) only with a fresh DIR.

  basic-demo --out demo_out
  basic-demo --out /tmp/d --gin_bindings='TRAIN_STEPS = 100'
"""
import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import gin

from basic_tf.data import fashion_mnist

PHASES = ("load", "tfrecords", "tokenizer", "train", "zero_shot", "export")
TRAIN_PREFIX, EVAL_PREFIX = "train", "test"


def _say(message: str) -> None:
    print(f"[basic-demo] {message}", flush=True)


class _Phases:
    """Wall time of each phase; prints a header and a done line around it."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    def run(self, name: str, title: str, fn, *args, **kwargs):
        number = PHASES.index(name) + 1
        _say(f"phase {number}/{len(PHASES)}: {title}")
        start = time.time()
        result = fn(*args, **kwargs)
        self.seconds[name] = round(time.time() - start, 2)
        _say(f"phase {number}/{len(PHASES)} done in {self.seconds[name]:.1f} s")
        return result


def load_fashion_mnist(data_dir: str, num_train: int, num_eval: int) -> dict:
    """{"train": (images, labels), "test": ...} uint8 arrays, cut to the asked sizes. Without
    the data, the loader's FileNotFoundError names the apt-get command to run."""
    out = {}
    for split, n in (("train", num_train), ("test", num_eval)):
        images, labels = fashion_mnist.load(split, data_dir)
        if not 0 < n <= len(images):
            raise ValueError(f"run_demo: asked for {n} {split} images; Fashion-MNIST has "
                             f"{len(images)} (1..{len(images)})")
        out[split] = (images[:n], labels[:n])
    return out


def write_split(images, labels, class_names: Sequence[str], output_prefix: str,
                image_format: str) -> List[str]:
    """Writes one split as captioned shards (each record: every training template filled with
    its class name); reuses shards a previous run completed with the same record count."""
    import tensorflow as tf

    from basic_tf import from_gin_data
    from basic_tf.data import sources
    from basic_tf.files import remove_matching

    summary_path = output_prefix + ".summary.json"
    if tf.io.gfile.exists(summary_path):
        with tf.io.gfile.GFile(summary_path, "r") as f:
            done = json.load(f)
        if done.get("written") == len(images) and all(map(tf.io.gfile.exists, done["shards"])):
            _say(f"  reusing {len(done['shards'])} shard(s) of {len(images)} records "
                 f"({output_prefix}-*)")
            return done["shards"]
    remove_matching(output_prefix + "-*")   # shards and sidecars of an unfinished run
    name = os.path.basename(output_prefix)
    records = sources.from_arrays(images, labels, class_names,
                                  templates=from_gin_data.caption_templates(),
                                  name=f"fashion_mnist/{name}", image_format=image_format)
    # Arrays were just encoded here, so Pillow's re-decode check is not needed.
    summary = from_gin_data.write_tfrecords(records, output_prefix, check_images=False,
                                            total=len(images))
    if summary.written != len(images):
        raise RuntimeError(f"{output_prefix}: wrote {summary.written} of {len(images)} records "
                           f"(summary {summary.to_json()}); the demo needs every image")
    _say(f"  wrote {summary.written} records in {len(summary.shards)} shard(s) ({output_prefix}-*)")
    return summary.shards


def train_tokenizer(class_names: Sequence[str], model_prefix: str, vocab_size: int) -> str:
    """The SentencePiece model of the training captions (the templates x class names); reused
    when DIR already has one."""
    import tensorflow as tf

    from basic_tf import from_gin_data
    from basic_tf.data import sources, tokenizer

    path = model_prefix + ".model"
    if tf.io.gfile.exists(path):
        _say(f"  reusing {path}")
        return path
    captions = [c for name in class_names
                for c in sources.class_captions(name, from_gin_data.caption_templates())]
    # Repeats give SentencePiece enough sentences to estimate piece frequencies.
    path = tokenizer.train_sentencepiece(captions * 20, model_prefix, vocab_size)
    _say(f"  {path}: {tokenizer.Tokenizer(path, 2).vocab_size} pieces from "
         f"{len(captions)} distinct captions")
    return path


@gin.configurable(denylist=["out_dir", "started_at"])
def run_demo(out_dir: str,
             fashion_mnist_dir: str = fashion_mnist.DEFAULT_DIR,
             num_train_images: int = 60_000,
             num_eval_images: int = 10_000,
             class_names: str = "fashion_mnist",
             eval_templates: str = "fashion_mnist",
             vocab_size: int = 256,
             image_format: str = "png",
             eval_batch_size: int = 500,
             model_name: str = "fashion_mnist",
             started_at: Optional[float] = None) -> dict:
    """Runs every phase (see the module docstring) in `out_dir`; returns the report dict.

    Args:
      out_dir: data/ (shards, tokenizer), model/ (checkpoints), export/ (TF Serving base dir),
        zero_shot.json (+ .txt, confusion PNG), report.json.
      fashion_mnist_dir: the IDX files (Debian package dataset-fashion-mnist).
      num_train_images / num_eval_images: the first N of each split (test: at most 10,000).
      class_names: the class-name set (basic_tf/zeroshot/data) of the captions AND the zero-shot
        classifier; the training captions put them in the templates of
        `caption_templates.templates`.
      eval_templates: the zero-shot prompt set (different from the training templates).
      vocab_size: asked SentencePiece vocabulary (a small corpus may give fewer pieces).
      image_format: "png" (lossless) or "jpeg".
      eval_batch_size: images per zero-shot evaluation batch.
      model_name: the served model's name (/v1/models/<name>:predict).
      started_at: time.time() the process started (counted in `seconds`); default now.
    """
    started_at = started_at or time.time()
    load_avg_start = os.getloadavg()
    phases = _Phases()
    import tensorflow as tf

    data_dir = os.path.join(out_dir, "data")
    tf.io.gfile.makedirs(data_dir)

    from basic_tf import from_gin_data
    from basic_tf.files import write_atomically
    from basic_tf.zeroshot import prompts

    names = prompts.load_class_names(class_names)
    templates = prompts.load_templates(eval_templates)
    data = phases.run("load", "Fashion-MNIST from the Debian package", load_fashion_mnist,
                      fashion_mnist_dir, num_train_images, num_eval_images)

    def write_both():
        return {split: write_split(*data[split], names, os.path.join(data_dir, prefix),
                                   image_format)
                for split, prefix in (("train", TRAIN_PREFIX), ("test", EVAL_PREFIX))}

    shards = phases.run("tfrecords", "captioned TFRecords", write_both)
    spm_path = phases.run("tokenizer", "SentencePiece vocabulary", train_tokenizer, names,
                          os.path.join(data_dir, "spm"), vocab_size)
    model_dir = os.path.join(out_dir, "model")
    training = phases.run("train", "contrastive training (gin/demo.gin)", _train, model_dir,
                          shards["train"], spm_path)
    trained = _Trained(model_dir, spm_path)
    # Evaluation and export are redone only when the checkpoint or their inputs changed.
    zero_shot_json = os.path.join(out_dir, "zero_shot.json")
    key = {"checkpoint": training["checkpoint"], "class_names": names, "templates": templates,
           "eval_images": num_eval_images}
    result = phases.run(
        "zero_shot", f"zero-shot evaluation on {num_eval_images} test images", _reuse_or_run,
        os.path.join(out_dir, "zero_shot.done.json"), key,
        lambda: _zero_shot(*trained.get(), shards["test"], spm_path, class_names,
                           eval_templates, eval_batch_size, zero_shot_json))
    export_root = os.path.join(out_dir, "export")
    version_dir = phases.run(
        "export", "SavedModel for TF Serving", _reuse_or_run,
        os.path.join(out_dir, "export.done.json"), dict(key, model_name=model_name),
        lambda: _export(*trained.get(), export_root, names, templates, model_name),
        still_there=tf.io.gfile.isdir)

    report = {
        "zero_shot_top1": result["top1"],
        "zero_shot_top5": result["top5"],
        "per_class": dict(zip(names, result["per_class_accuracy"])),
        "eval_examples": result["count"],
        "seconds": round(time.time() - started_at, 2),
        "phase_seconds": phases.seconds,
        "export_dir": os.path.dirname(version_dir),
        "export_version_dir": version_dir,
        "models_config": os.path.join(export_root, "models.config"),
        "model_dir": model_dir,
        "zero_shot_json": os.path.join(out_dir, "zero_shot.json"),
        "train": training,
        "train_images": num_train_images,
        "train_templates": list(from_gin_data.caption_templates()),
        "eval_templates": templates,
        "class_names": names,
        "load_average": {"start": load_avg_start, "end": os.getloadavg()},
    }
    write_atomically(os.path.join(out_dir, "report.json"), json.dumps(report, indent=1) + "\n")
    print(format_report(report, os.path.join(out_dir, "report.json")), flush=True)
    return report


def _train(model_dir: str, shards: Sequence[str], spm_path: str) -> dict:
    """basic_tf.from_gin.train on the demo shards; resumes from model_dir's checkpoint."""
    import tensorflow as tf

    from basic_tf import from_gin

    gin.bind_parameter("make_dataset.file_pattern", list(shards))
    gin.bind_parameter("make_dataset.tokenizer_path", spm_path)
    latest = tf.train.latest_checkpoint(model_dir)
    start_step = int(latest.rsplit("-", 1)[-1]) if latest else 0
    if latest:
        _say(f"  resuming from {latest}")
    out = from_gin.train(model_dir)
    return {"checkpoint": tf.train.latest_checkpoint(model_dir), "start_step": start_step,
            "final_step": out["step"], "steps_run": out["step"] - start_step,
            "last_progress_line": out["progress"][-1] if out["progress"] else None,
            "global_batch_size": out["global_batch_size"],
            "num_micro_batches": out["num_micro_batches"]}


class _Trained:
    """The trained DualEncoder (latest checkpoint) and its tokenizer, restored on first use."""

    def __init__(self, model_dir: str, spm_path: str):
        self.model_dir, self.spm_path, self._pair = model_dir, spm_path, None

    def get(self):
        if self._pair is None:
            from basic_tf.from_gin import load_trained_model

            model, tokenizer, _, _ = load_trained_model(self.model_dir, "demo model_dir",
                                                        self.spm_path)
            self._pair = (model, tokenizer)
        return self._pair


def _reuse_or_run(done_path: str, key: dict, fn, still_there=None):
    """fn()'s result, or the one saved in done_path by a run with the same key (and, with
    still_there, whose result passes that check)."""
    import tensorflow as tf

    from basic_tf.files import write_atomically

    if tf.io.gfile.exists(done_path):
        with tf.io.gfile.GFile(done_path, "r") as f:
            done = json.load(f)
        if done["key"] == key and (still_there is None or still_there(done["result"])):
            _say(f"  reusing the result of a previous run with checkpoint {key['checkpoint']}")
            return done["result"]
    result = fn()
    write_atomically(done_path, json.dumps({"key": key, "result": result}, indent=1))
    return result


def _zero_shot(model, tokenizer, shards, spm_path, class_names, templates, batch_size,
               out_path) -> dict:
    from basic_tf import from_gin_data
    from basic_tf.zeroshot import prompts

    data = from_gin_data.data_config(tokenizer_path=spm_path).check_model(model.image_size,
                                                                        model.max_text_len)
    task = from_gin_data.tfrecord_task(list(shards), prompts.load_class_names(class_names),
                                       prompts.load_templates(templates), data, batch_size,
                                       name="fashion_mnist_test")
    result = from_gin_data.run_and_report(model, tokenizer, [task], out_path=out_path)[task.name]
    keep = ("count", "top1", "top5", "class_count", "confusion")
    per_class = [None if a != a else a for a in result["per_class_accuracy"]]  # NaN: no example
    return dict({k: result[k] for k in keep}, per_class_accuracy=per_class)


def _export(model, tokenizer, export_root, class_names, templates, model_name) -> str:
    from basic_tf.from_gin_data import data_config, export_for_serving

    data = data_config()
    return export_for_serving(model, tokenizer, export_root, class_names, templates,
                              model_name=model_name, crop_fraction=data.eval_crop_fraction,
                              antialias=data.antialias)


def format_report(report: dict, path: str) -> str:
    """The short report printed at the end."""
    lines = ["", "=" * 64,
             f"zero-shot top-1 {100 * report['zero_shot_top1']:.2f}%   top-5 "
             f"{100 * report['zero_shot_top5']:.2f}%   ({report['eval_examples']} test images, "
             f"{len(report['eval_templates'])} prompt templates)", "per class:"]
    lines += [f"  {name:<12} {100 * acc:6.2f}%" for name, acc in report["per_class"].items()]
    phases = "  ".join(f"{k} {v:.1f}s" for k, v in report["phase_seconds"].items())
    lines += [f"time: {report['seconds']:.1f} s total ({phases})",
              f"training: steps {report['train']['start_step']} -> {report['train']['final_step']}"
              f", batch {report['train']['global_batch_size']} in "
              f"{report['train']['num_micro_batches']} micro-batches",
              f"checkpoints: {report['model_dir']}",
              f"TF Serving model base dir: {report['export_dir']} (models.config: "
              f"{report['models_config']})",
              f"report: {path}", "=" * 64]
    return "\n".join(lines)


def _no_tensorflow_info(record: logging.LogRecord) -> bool:
    """False for an INFO (or lower) record logged from inside the tensorflow package."""
    return record.levelno > logging.INFO or (
        f"{os.sep}tensorflow{os.sep}" not in record.pathname)


def main(argv, started_at: Optional[float] = None) -> int:
    """Console entry body: parses gin (demo.gin + --gin_bindings) and runs the demo."""
    from absl import app, flags
    from absl import logging as absl_logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from basic_tf import cli

    FLAGS = flags.FLAGS
    cli.parse_gin_flags()
    # One line per phase and per progress step: TensorFlow's own INFO lines (checkpoint
    # sharding times, SavedModel input renames, asset and fingerprint paths) stay out; its
    # warnings and errors, and basic_tf's lines, stay in.
    absl_logging.get_absl_handler().addFilter(_no_tensorflow_info)
    try:
        run_demo(FLAGS.out, started_at=started_at)
    except FileNotFoundError as e:   # missing data: the message says what to install
        print(f"basic-demo: {e}", flush=True)
        return 1
    return 0


def console_main() -> None:
    """`basic-demo`: flags are defined here, not at import, so that importing this module (gin
    does, for demo.gin's bindings) adds no flags to other programs."""
    started_at = time.time()
    from absl import flags

    from basic_tf import cli

    # The flags belong to the program that calls this (the basic-demo script): its --help
    # lists them (absl shows the main module's key flags).
    flags.disclaim_key_flags()
    flags.DEFINE_string("out", None, "Output directory (data, checkpoints, export, report.json); "
                        "an existing one is resumed.")
    cli.define_gin_flags(["demo"], example="'TRAIN_STEPS = 100'")
    flags.mark_flag_as_required("out")
    cli.run(lambda argv: main(argv, started_at))

"""Evaluation tasks and the one entry that runs them on a model: what tools/evaluate.py and the
trainer's periodic zero-shot hook call.

A task names a dataset function `dataset_fn(input_context) -> tf.data.Dataset` (used with
`strategy.distribute_datasets_from_function`, so every strategy works) and, for classification,
the class names and templates its classifier is built from.

Nothing here reads gin: the top (basic_tf/from_gin_data.py) passes the dataset builders and the
`Evaluators` with the gin bindings applied (make_dataset.*, tfds_classification_dataset.*,
retrieval_dataset.*, build_zero_shot_classifier.*, evaluate_classification.*,
evaluate_retrieval.*, run_and_report.*).
"""
import dataclasses
import functools
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import tensorflow as tf
from absl import logging

from basic_tf.data.data_config import DataConfig
from basic_tf.files import absolute, write_atomically
from basic_tf.zeroshot import inputs, prompt_checks, prompts, report
from basic_tf.zeroshot.classifier import build_zero_shot_classifier
from basic_tf.zeroshot.evaluation import evaluate_classification
from basic_tf.zeroshot.retrieval import evaluate_retrieval

DatasetFn = Callable[[Optional[tf.distribute.InputContext]], tf.data.Dataset]


@dataclasses.dataclass
class ClassificationTask:
    """Zero-shot classification: batches of images/labels/mask, class names, templates."""
    name: str
    dataset_fn: DatasetFn
    class_names: List[str]
    templates: List[str]


@dataclasses.dataclass
class RetrievalTask:
    """Image-text retrieval: batches of images/token_ids/caption_mask/mask."""
    name: str
    dataset_fn: DatasetFn


Task = Union[ClassificationTask, RetrievalTask]


@dataclasses.dataclass(frozen=True)
class Evaluators:
    """What evaluate_tasks calls: the classifier builder, classification and retrieval
    evaluation (defaults: the plain functions; the top passes them configured)."""
    build_classifier: Callable = build_zero_shot_classifier
    classify: Callable = evaluate_classification
    retrieve: Callable = evaluate_retrieval


def tfds_task(name: str, data: DataConfig, data_dir: Optional[str] = None,
              split: Optional[str] = None, global_batch_size: int = 256,
              class_names: Optional[str] = None, templates: Optional[str] = None,
              build_dataset: Callable = inputs.tfds_classification_dataset
              ) -> ClassificationTask:
    """A TFDS classification set seen through `data` (image size, crop, antialias); class
    names/templates default to its preset (inputs.TFDS_PRESETS). Checks now (not at the first
    batch) that the data is prepared locally. build_dataset: inputs.tfds_classification_dataset
    or a configured twin."""
    preset = inputs.TFDS_PRESETS.get(name)
    class_names = class_names or (preset.class_names if preset else None)
    templates = templates or (preset.templates if preset else None)
    if class_names is None or templates is None:
        raise ValueError(f"TFDS {name!r} has no preset; give --class_names and --templates "
                         f"(presets: {sorted(inputs.TFDS_PRESETS)})")
    inputs.tfds_builder(name, data_dir)

    def dataset_fn(ctx=None):
        return build_dataset(
            name, split=split, data_dir=data_dir, image_size=data.image_size,
            global_batch_size=global_batch_size, class_names=class_names,
            crop_fraction=data.eval_crop_fraction, antialias=data.antialias, input_context=ctx)

    label = name if split is None else f"{name}:{split}"
    return ClassificationTask(label, dataset_fn, prompts.load_class_names(class_names),
                              prompts.load_templates(templates))


def tfrecord_task(file_pattern: Union[str, Sequence[str]], class_names: Sequence[str],
                  templates: Sequence[str], data: DataConfig, global_batch_size: int = 256,
                  name: str = "tfrecords", label_map: Optional[Sequence[int]] = None,
                  with_ids: bool = False, make_dataset: Optional[Callable] = None
                  ) -> ClassificationTask:
    """Labelled TFRecords (basic_tf.data.schema) read by the data pipeline in evaluation mode,
    with exactly the training config's view (`data`).

    class_names / templates: lists (see prompts.load_class_names / load_templates).
    label_map: int [num record labels]: record label -> class_names column (labels.by_name);
      None = record label i is column i (checked by labels.check_class_names).
    with_ids: batches carry "example_id" (tf.string; not through a TPU infeed), for per-image
      predictions.
    make_dataset: basic_tf.data.pipeline.make_dataset (the default) or a configured twin with
      its signature (basic_tf/from_gin_data.py make_dataset_for).
    """
    from basic_tf.data import pipeline

    make_dataset = make_dataset or pipeline.make_dataset

    table = None if label_map is None else tf.constant(list(label_map), tf.int32)

    def dataset_fn(ctx=None):
        # Explicit arguments override any make_dataset bindings of a training gin file.
        ds = make_dataset(
            ctx, data, training=False, file_pattern=file_pattern,
            eval_file_pattern=file_pattern, global_batch_size=global_batch_size,
            eval_global_batch_size=global_batch_size, string_features=with_ids)
        if table is None:
            return ds
        return ds.map(lambda b: dict(b, labels=tf.where(
            b["labels"] >= 0, tf.gather(table, tf.maximum(b["labels"], 0)), b["labels"])))

    return ClassificationTask(name, dataset_fn, list(class_names), list(templates))


def retrieval_task(file_pattern: Union[str, Sequence[str]], tokenizer, data: DataConfig,
                   global_batch_size: int = 64, max_captions: int = 5,
                   name: str = "retrieval",
                   build_dataset: Callable = inputs.retrieval_dataset) -> RetrievalTask:
    """Captioned TFRecords, every image with up to `max_captions` captions, seen through `data`
    (build_dataset: inputs.retrieval_dataset or a configured twin)."""
    def dataset_fn(ctx=None):
        return build_dataset(tokenizer, file_pattern=file_pattern, image_size=data.image_size,
                             global_batch_size=global_batch_size, max_captions=max_captions,
                             crop_fraction=data.eval_crop_fraction, antialias=data.antialias,
                             input_context=ctx)
    return RetrievalTask(name, dataset_fn)


def evaluate_tasks(model, tokenizer, tasks: Sequence[Task],
                   strategy: Optional[tf.distribute.Strategy] = None,
                   max_steps: Optional[int] = None, predictions: bool = False,
                   evaluators: Evaluators = Evaluators()) -> Dict[str, Dict]:
    """Runs every task on `model` (encode_image / encode_text contract of basic_tf.models)
    with `evaluators`' functions.

    Classifiers are built once per (class names, templates). Returns {task name: result};
    with `predictions`, classification results hold per-example top-k classes and softmax
    scores (evaluation.evaluate_classification).
    """
    strategy = strategy or tf.distribute.get_strategy()
    classifiers = {}
    results = {}
    for task in tasks:
        dist = strategy.distribute_datasets_from_function(task.dataset_fn)
        if isinstance(task, ClassificationTask):
            key = (tuple(task.class_names), tuple(task.templates))
            check = None
            if hasattr(tokenizer, "model_proto"):  # a SentencePiece Tokenizer: report prompts
                check = prompt_checks.check_prompts(tokenizer, task.class_names, task.templates)
                for line in prompt_checks.describe(check):
                    logging.warning("%s prompts: %s", task.name, line)
            if key not in classifiers:
                classifiers[key] = evaluators.build_classifier(
                    model.encode_text, tokenizer, task.class_names, task.templates)
            results[task.name] = evaluators.classify(
                model.encode_image, classifiers[key], dist, strategy,
                class_names=task.class_names, max_steps=max_steps, predictions=predictions,
                logit_scale=float(getattr(model, "logit_scale", 1.0)))
            if check is not None:
                results[task.name]["prompt_check"] = check
        else:
            results[task.name] = evaluators.retrieve(model.encode_image, model.encode_text,
                                                     dist, strategy, max_steps=max_steps)
    return results


def scalar_summary(results: Dict[str, Dict]) -> Dict[str, float]:
    """{"zeroshot/<task>/top1": ..., "retrieval/<task>/image_to_text_r1": ...}: for logs and
    TensorBoard (the trainer's periodic evaluation)."""
    out = {}
    for name, r in results.items():
        if "image_to_text" in r:
            for direction in ("image_to_text", "text_to_image"):
                for k, value in r[direction].items():
                    out[f"retrieval/{name}/{direction}_r{k}"] = float(value)
        else:
            out[f"zeroshot/{name}/top1"] = float(r["top1"])
            out[f"zeroshot/{name}/top{r['k']}"] = float(r[f"top{r['k']}"])
    return out


def periodic_eval_fn(tokenizer, tasks: Sequence[Task],
                     strategy: Optional[tf.distribute.Strategy] = None,
                     max_steps: Optional[int] = None, evaluators: Evaluators = Evaluators()
                     ) -> Callable[[object], Dict[str, float]]:
    """`eval_fn(model) -> {scalar name: value}` for the trainer's periodic evaluation hook."""
    def eval_fn(model):
        return scalar_summary(evaluate_tasks(model, tokenizer, tasks, strategy, max_steps,
                                             evaluators=evaluators))
    return eval_fn


def _file_safe(name: str) -> str:
    """A task name as a file name part: letters, digits, '-' and '_' kept, the rest '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def run_and_report(model, tokenizer, tasks: Sequence[Task], strategy=None,
                   out_path: Optional[str] = None, metadata: Optional[Dict] = None,
                   confusion_max_classes: int = 100, max_steps: Optional[int] = None,
                   predictions_path: Optional[str] = None,
                   evaluators: Evaluators = Evaluators()) -> Dict:
    """evaluate_tasks, then print the table and write `out_path` (JSON), `<out>.txt` (table) and
    `<out>.<task>.confusion.png` for tasks with <= confusion_max_classes classes;
    `predictions_path` (.csv / .jsonl): every classified image's top-k classes and scores."""
    start = time.time()
    if predictions_path:
        report.check_predictions_path(predictions_path)
    results = evaluate_tasks(model, tokenizer, tasks, strategy, max_steps,
                             predictions=bool(predictions_path), evaluators=evaluators)
    predictions = {name: r.pop("predictions") for name, r in results.items()
                   if "predictions" in r}
    table = report.format_table(results)
    print(table, flush=True)
    # The results are in hand: write the most valuable file first, try every file, and name
    # each one that could not be written (a full disk must not cost the whole evaluation).
    writes = []   # (path, write function), in order of value
    if out_path:
        stem = out_path[:-5] if out_path.endswith(".json") else out_path
        pngs = {name: f"{stem}.{_file_safe(name)}.confusion.png" for name, r in results.items()
                if r.get("confusion") is not None and r["num_classes"] <= confusion_max_classes}
        for name, png in pngs.items():
            results[name]["confusion_png"] = absolute(png)
        meta = dict(metadata or {}, seconds=time.time() - start)
        writes.append((out_path, functools.partial(report.write_json, results, out_path, meta,
                                                   what="--out")))
        writes.append((stem + ".txt", functools.partial(write_atomically, stem + ".txt",
                                                        table + "\n", what="--out")))
    if predictions_path:
        with_predictions = {n: dict(results[n], predictions=p) for n, p in predictions.items()}
        writes.append((predictions_path, functools.partial(
            report.write_predictions, with_predictions, predictions_path, what="--predictions")))
    if out_path:
        writes += [(png, functools.partial(
            report.save_confusion_png, results[name]["confusion"], results[name]["class_names"],
            png, title=f"{name}: top-1 {100 * results[name]['top1']:.2f}%", what="--out"))
            for name, png in pngs.items()]
    errors = {}
    for path, write in writes:
        try:
            write()
            logging.info("wrote %s", path)
        except OSError as e:
            logging.error("%s", e)
            errors[path] = e
    if errors:
        written = [path for path, _ in writes if path not in errors]
        raise OSError(f"{next(iter(errors.values()))} ({len(errors)} of {len(writes)} output "
                      f"files not written; written: {', '.join(written) or 'none'})")
    return results

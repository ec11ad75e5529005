"""Evaluation results as JSON, a readable table and a confusion-matrix PNG.

`results` is {task name: result dict} with classification results from
`evaluation.evaluate_classification` and retrieval results from `retrieval.evaluate_retrieval`.
"""
import io
import json
import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

from basic_tf.files import write_atomically
from basic_tf.zeroshot import prompt_checks


def _is_retrieval(result: Dict) -> bool:
    return "image_to_text" in result


def format_table(results: Dict[str, Dict]) -> str:
    """One line per task: accuracy (%) for classification, R@K (%) both ways for retrieval."""
    lines = []
    classification = {n: r for n, r in results.items() if not _is_retrieval(r)}
    retrieval = {n: r for n, r in results.items() if _is_retrieval(r)}
    if classification:
        width = max(12, *(len(n) for n in classification))
        lines.append(f"{'zero-shot':<{width}}  {'examples':>9}  {'classes':>7}  {'top-1':>7}  "
                     f"{'top-k':>7}")
        for name, r in classification.items():
            k = r["k"]
            lines.append(f"{name:<{width}}  {r['count']:>9d}  {r['num_classes']:>7d}  "
                         f"{100 * r['top1']:>6.2f}%  {100 * r[f'top{k}']:>6.2f}% (k={k})")
            if r.get("skipped_records"):
                lines.append(f"{'':<{width}}  ({r['skipped_records']} unreadable records skipped)")
            for line in prompt_checks.describe(r["prompt_check"]) if r.get("prompt_check") else []:
                lines.append(f"{'':<{width}}  (prompts: {line})")
    if retrieval:
        if lines:
            lines.append("")
        width = max(12, *(len(n) for n in retrieval))
        for name, r in retrieval.items():
            ks = list(r["image_to_text"])
            head = "  ".join(f"R@{k:<4}" for k in ks)
            lines.append(f"{'retrieval':<{width}}  {'images':>7}  {'captions':>8}  direction      "
                         f"{head}")
            for direction in ("image_to_text", "text_to_image"):
                values = "  ".join(f"{100 * r[direction][k]:5.1f}%" for k in ks)
                lines.append(f"{name:<{width}}  {r['num_images']:>7d}  {r['num_captions']:>8d}  "
                             f"{direction:<13}  {values}")
            if "num_distinct_captions" in r:
                lines.append(f"{'':<{width}}  (ground truth by caption identity: "
                             f"{r['num_distinct_captions']} distinct captions of "
                             f"{r['num_captions']}, each ranked once; every image with a "
                             "caption of that text is a hit)")
            if r.get("skipped_records"):
                lines.append(f"{'':<{width}}  ({r['skipped_records']} unreadable records skipped)")
    return "\n".join(lines)


def _jsonable(value):
    """NaN -> None (JSON has no NaN), numpy scalars -> Python, int dict keys -> str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(results: Dict[str, Dict], path: str, metadata: Optional[Dict] = None,
               what: str = "") -> None:
    """Writes {"metadata": ..., "results": ...} (NaN written as null), whole or not at all."""
    text = json.dumps(_jsonable({"metadata": metadata or {}, "results": results}), indent=1)
    write_atomically(path, text + "\n", what)


def save_confusion_png(confusion: Sequence[Sequence[int]], class_names: Optional[Sequence[str]],
                       path: str, title: str = "", max_classes: int = 100,
                       what: str = "") -> None:
    """Row-normalised confusion matrix (rows = true class) as a PNG; up to `max_classes`."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, np.float64)
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n > max_classes:
        raise ValueError(f"confusion matrix of shape {matrix.shape}: need square with at most "
                         f"{max_classes} classes")
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.18 * n, 22)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rows, cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    font = 8 if n <= 20 else max(3, 8 - n // 20)
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                            color="black" if rows[i, j] > 0.5 else "white")
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomically(path, png.getvalue(), what)


PREDICTION_FORMATS = (".csv", ".jsonl")


def check_predictions_path(path: str) -> str:
    """Refuses (before any work) a predictions path that is neither .csv nor .jsonl."""
    if os.path.splitext(path)[1].lower() not in PREDICTION_FORMATS:
        raise ValueError(f"--predictions={path!r}: the extension picks the format; use .csv or "
                         ".jsonl")
    return path


def prediction_rows(task: str, result: Dict):
    """One dict per real example of a classification result made with predictions=True:
    task, example_id (or '<task>/<n>' when the data has no ids), label, label_name, classes
    (top-k names, best first) and scores (softmax probabilities, as the export serves)."""
    p, names = result["predictions"], result["class_names"]
    for n, (example_id, label, ids, scores) in enumerate(zip(
            p["example_id"], p["labels"], p["top_ids"], p["top_scores"])):
        yield {"task": task, "example_id": example_id or f"{task}/{n}", "label": int(label),
               "label_name": names[label] if names and 0 <= label < len(names) else "",
               "classes": [names[i] if names else str(i) for i in ids],
               "scores": [float(s) for s in scores]}


def write_predictions(results: Dict[str, Dict], path: str, what: str = "") -> int:
    """Writes every classification task's per-image predictions to `path`: JSONL (one object
    per line, see prediction_rows) or CSV (columns task, example_id, label, label_name,
    top1_class, top1_score, ..., topk_class, topk_score). Returns the number of rows."""
    import csv

    rows = [row for name, r in results.items() if "predictions" in r
            for row in prediction_rows(name, r)]
    f = io.StringIO(newline="")
    if path.lower().endswith(".jsonl"):
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        k = max((len(row["classes"]) for row in rows), default=0)
        writer = csv.writer(f)
        writer.writerow(["task", "example_id", "label", "label_name"]
                        + [f"top{i + 1}_{kind}" for i in range(k) for kind in ("class", "score")])
        for row in rows:
            writer.writerow([row["task"], row["example_id"], row["label"], row["label_name"]]
                            + [v for c, s in zip(row["classes"], row["scores"])
                               for v in (c, f"{s:.8g}")])
    write_atomically(path, f.getvalue(), what)
    return len(rows)

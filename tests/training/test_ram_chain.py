"""The whole chain with every user file in a filesystem that is not the local disk.

TensorFlow's `ram://` filesystem stands in for a gs:// bucket: any `open`, `os.path.isfile` or
`os.makedirs` on a user path fails there (tests/test_user_paths.py finds such calls; this test
finds what the scan cannot, e.g. a path passed to a library that reads the disk itself). A ram://
file lives only inside the process that wrote it, so the chain runs in this one process through
the library entry points the tools call (tools/make_tfrecords.py --source=table,
tools/train_tokenizer.py, tools/train.py, tools/evaluate.py, tools/export.py), not subprocesses.
A "kill" in-process is a run that stops at step 2 followed by a fresh run on the same model_dir
resuming to step 4 (tests/training/test_resume_kill.py kills a real process on local disk).
"""
import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.data import sources, tokenizer, writer
from basic_tf.export import export_for_serving
from basic_tf.zeroshot import prompts, run
from training_helpers import COLOURS, bindings

TEMPLATES = ["a {c} square", "{c} picture"]


def _write_table(root: str, n: int) -> str:
    """n PNG images (noisy squares of 4 colours) and a JSONL table naming them, under root."""
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    tf.io.gfile.makedirs(f"{root}/images")
    rows = []
    for i in range(n):
        label = i % len(names)
        pixels = np.clip(np.array(COLOURS[names[label]])[None, None, :]
                         + rng.normal(0, 25, (36, 36, 3)), 0, 255).astype(np.uint8)
        with tf.io.gfile.GFile(f"{root}/images/{i:03d}.png", "wb") as f:
            f.write(tf.io.encode_png(pixels).numpy())
        rows.append({"image": f"images/{i:03d}.png", "label": label,
                     "caption": [f"a {names[label]} square number {i}", f"{names[label]} picture"]})
    table = f"{root}/pairs.jsonl"
    with tf.io.gfile.GFile(table, "w") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
    with tf.io.gfile.GFile(f"{root}/names.txt", "w") as f:
        f.write("\n".join(names) + "\n")
    return table


@pytest.mark.slow  # trains 4 steps of models/tiny, evaluates and exports it
def test_data_tokenizer_train_resume_evaluate_export_on_ram_filesystem():
    root = f"ram://chain-{uuid.uuid4().hex[:8]}"
    assert not tf.io.gfile.exists(root) and not os.path.exists(root.replace("ram://", ""))

    # tools/make_tfrecords.py --source=table --class_names_file=names.txt
    table = _write_table(root, n=32)
    names = prompts.load_class_names(f"{root}/names.txt")
    summary = writer.write_tfrecords(
        sources.from_table(table, "image", "caption", label_column="label", class_names=names),
        f"{root}/data/train", show_progress=False)
    assert summary.written == 32 and all(s.startswith(f"{root}/data/") for s in summary.shards)
    pattern = f"{root}/data/train-*.tfrecord"
    assert prompts.load_class_names(f"{root}/data/train.class_names.json") == names

    # tools/train_tokenizer.py --shards=... --model_prefix=ram://.../spm
    spm = tokenizer.train_sentencepiece(
        [f"a {c} square number {i}" for i in range(32) for c in names] * 4, f"{root}/spm", 60)
    assert tf.io.gfile.exists(f"{root}/spm.vocab") and tokenizer.Tokenizer(spm, 16).vocab_size

    # tools/train.py: 2 steps, stop; the same command again resumes to step 4
    model_dir = f"{root}/run"
    data = {"pattern": pattern, "tokenizer": spm}
    for steps in (2, 4):
        config.parse(["models/tiny"], bindings(data, global_batch_size=8) + [
            f"train.train_steps = {steps}", "train.steps_per_loop = 2",
            "train.checkpoint_interval = 2", "train.log_every = 2"])
        result = from_gin.train(model_dir)
        assert result["step"] == steps and result["checkpoint"] == f"{model_dir}/ckpt-{steps}"
    # The second run resumed from ckpt-2: it logged step 4 only (a fresh start logs step 2 too).
    assert [line.split(" (")[0] for line in result["progress"]] == ["step 4/4"]
    assert tf.io.gfile.exists(f"{model_dir}/operative_config.gin")
    assert not tf.io.gfile.exists(f"{model_dir}/training.lock")   # released at each end

    # tools/evaluate.py --model_dir --tfrecords --class_names --templates --predictions --out
    model, tok, view, restored = from_gin.load_trained_model(model_dir, "--model_dir", spm)
    assert restored == f"{model_dir}/ckpt-4"
    task = run.tfrecord_task(pattern, names, TEMPLATES, view, global_batch_size=8, with_ids=True)
    run.run_and_report(model, tok, [task], out_path=f"{root}/eval/eval.json",
                       predictions_path=f"{root}/eval/predictions.jsonl")
    with tf.io.gfile.GFile(f"{root}/eval/predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f.read().splitlines()]
    assert len(predictions) == 32 and predictions[0]["example_id"] == "images/000.png"
    with tf.io.gfile.GFile(f"{root}/eval/eval.json") as f:
        assert json.load(f)["results"]["tfrecords"]["count"] == 32

    # tools/export.py --export_dir=ram://.../serve, then a consumer loads it and classifies
    path = export_for_serving(model, tok, f"{root}/serve", names, TEMPLATES, model_name="tiny",
                              crop_fraction=view.eval_crop_fraction, antialias=view.antialias)
    assert path == f"{root}/serve/tiny/1"
    assert tf.io.gfile.exists(f"{root}/serve/models.config")
    import tensorflow_text  # noqa: F401  (the SentencePiece ops of the SavedModel)

    loaded = tf.saved_model.load(path)
    with tf.io.gfile.GFile(f"{root}/images/001.png", "rb") as f:
        image = f.read()
    out = loaded.signatures["classify"](images=tf.constant([image]))
    assert out["classes"].shape[0] == 1 and out["classes"][0, 0].numpy().decode() in names
    assert np.isfinite(out["scores"].numpy()).all()
    tf.io.gfile.rmtree(root)

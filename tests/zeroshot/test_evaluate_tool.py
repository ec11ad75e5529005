"""End to end: labelled, captioned TFRecords -> data pipeline -> evaluation, in process under 4
replicas with hand-computed counts, and through tools/evaluate.py on the tiny model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import augment, schema
from basic_tf.data.data_config import DataConfig
from basic_tf.data.pipeline import make_dataset
from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece
from basic_tf.zeroshot import evaluate_classification, prompts
from basic_tf.zeroshot.retrieval import recall_at_k

from zeroshot_helpers import bucket_encoder, bucket_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ["red", "green", "blue", "yellow"]
LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3]
BUCKETS = [0, 1, 2, 3, 0, 1, 2, 3, 3, 3, 0]   # rows 8-10 are drawn from the wrong bucket
CAPTIONS = [1, 2, 3, 1, 2, 1, 1, 3, 1, 2, 1]  # captions per record (retrieval)
WORDS = ["river", "mountain", "city", "night", "dog", "cat", "boat", "tree", "snow", "beach",
         "old", "small", "bright", "dark", "two", "many"]


def png(array):
    return tf.io.encode_png(array).numpy()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two shards: 11 good records + one corrupt PNG (skipped by the pipeline); a tokenizer."""
    root = tmp_path_factory.mktemp("zs_tool")
    records = []
    for i, (label, bucket) in enumerate(zip(LABELS, BUCKETS)):
        captions = [f"a {NAMES[label]} square number {i} view {j}" for j in range(CAPTIONS[i])]
        records.append(schema.encode_record(schema.Record(
            png(bucket_image(bucket, 4, 12)), captions, f"zs/{i}", label, NAMES[label])))
    corrupt = schema.encode_record(schema.Record(b"\x89PNG\r\n\x1a\n" + b"broken" * 10,
                                                 ["a red square"], "zs/corrupt", 0, "red"))
    shards = [str(root / f"eval-0000{i}-of-00002.tfrecord") for i in range(2)]
    for path, part in zip(shards, [records[:5] + [corrupt], records[5:]]):
        with tf.io.TFRecordWriter(path) as w:
            for r in part:
                w.write(r)
    # Retrieval shard: distinct random images and captions, so that no two similarities of the
    # untrained tiny model tie within float error (constant images would).
    rng = np.random.default_rng(7)
    retrieval_captions = [[" ".join(rng.choice(WORDS, 5)) for _ in range(c)] for c in CAPTIONS]
    with tf.io.TFRecordWriter(str(root / "ret-00000-of-00001.tfrecord")) as w:
        for i, caps in enumerate(retrieval_captions):
            image = rng.integers(0, 256, size=[20, 16, 3], dtype=np.uint8)
            w.write(schema.encode_record(schema.Record(png(image), caps, f"ret/{i}")))
        w.write(corrupt)
    texts = [f"a {n} square number {i} view {j}"
             for n in NAMES for i in range(12) for j in range(3)]
    texts += [f"a photo of a {n} square." for n in NAMES] + sum(retrieval_captions, [])
    sp = train_sentencepiece(texts, str(root / "sp"), vocab_size=40)
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    (root / "templates.txt").write_text("a photo of a {c} square.\na {c} thing.\n")
    return {"root": root, "pattern": str(root / "eval-*.tfrecord"), "tokenizer": sp,
            "retrieval": str(root / "ret-*.tfrecord")}


def test_pipeline_under_4_replicas_exact_counts(data, mirrored4):
    """11 records at per-replica batch 1 on 4 replicas (3 steps, 1 padding row), plus a corrupt
    record: 11 counted, top-1 8, top-2 9 (row 8: predicted 3, ties -> [3, 0] holds label 0)."""
    def dataset_fn(ctx):
        return make_dataset(ctx, DataConfig(image_size=6, seq_len=8,
                                            tokenizer_path=data["tokenizer"]),
                            training=False, file_pattern=data["pattern"], global_batch_size=4,
                            log_skipped=False)

    dist = mirrored4.distribute_datasets_from_function(dataset_fn)
    result = evaluate_classification(bucket_encoder(4), np.eye(4, dtype=np.float32), dist,
                                     mirrored4, class_names=NAMES, k=2)
    assert (result["count"], result["top1_correct"], result["top2_correct"]) == (11, 8, 9)
    assert result["skipped_records"] == 1
    assert result["class_count"] == [3, 3, 2, 3]
    want = np.zeros([4, 4], int)
    np.add.at(want, (LABELS, BUCKETS), 1)
    np.testing.assert_array_equal(result["confusion"], want)


@pytest.mark.slow  # tools/evaluate.py end to end in a subprocess
def test_tool_on_tiny_model(data, tmp_path):
    """tools/evaluate.py on tiny DualEncoder weights equals an in-process NumPy reference.

    The weights travel as a Keras .weights.h5 file: the models' tf.train.Checkpoint misses the
    blocks kept in Python lists (see
    tests/training/test_restore.py::test_restore_refuses_a_partial_checkpoint)."""
    from basic_tf import config, from_gin

    config.parse(["models/tiny"])
    tf.keras.utils.set_random_seed(5)
    model = from_gin.dual_encoder()
    ckpt = str(tmp_path / "tiny.weights.h5")
    model.save_weights(ckpt)
    out = str(tmp_path / "eval.json")
    cmd = [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--gin_file=models/tiny",
           "--gin_bindings=make_dataset.image_size=32", "--gin_bindings=make_dataset.seq_len=16",
           f"--checkpoint={ckpt}", f"--tokenizer={data['tokenizer']}",
           f"--tfrecords={data['pattern']}", f"--retrieval_tfrecords={data['retrieval']}",
           f"--class_names={data['root'] / 'names.txt'}",
           f"--templates={data['root'] / 'templates.txt'}", "--batch_size=4", f"--out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(out))["results"]
    assert "top-1" in proc.stdout and "image_to_text" in proc.stdout

    # Reference: decode + centre crop each image, tokenize, embed eagerly, NumPy math.
    good = [r for path in sorted(tf.io.gfile.glob(data["pattern"]))
            for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    examples = [schema.parse_example(r) for r in good]
    examples = [e for e in examples if e["id"].numpy() != b"zs/corrupt"]
    images = tf.stack([augment.decode_and_center_crop(e["image/encoded"], 32) for e in examples])
    labels = np.array([int(e["label"]) for e in examples])
    image_emb = model.encode_image(images).numpy()
    tokenizer = Tokenizer(data["tokenizer"], model.max_text_len)
    templates = prompts.load_templates(str(data["root"] / "templates.txt"))
    prompt_emb = model.encode_text(tokenizer(prompts.fill_templates(NAMES, templates))).numpy()
    prompt_emb /= np.linalg.norm(prompt_emb, axis=-1, keepdims=True)
    classes = prompt_emb.reshape(4, len(templates), -1).mean(1)
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    predictions = np.argmax(image_emb @ classes.T, axis=1)

    clf = results["tfrecords"]
    assert clf["count"] == 11 and clf["skipped_records"] == 1
    confusion = np.zeros([4, 4], int)
    np.add.at(confusion, (labels, predictions), 1)
    np.testing.assert_array_equal(clf["confusion"], confusion)
    assert clf["top1_correct"] == int(np.trace(confusion))
    assert clf["top5_correct"] == 11  # 4 classes: top-5 holds every class
    assert os.path.isfile(clf["confusion_png"]) and os.path.isfile(out[:-5] + ".txt")

    records = [schema.parse_example(r) for r in
               tf.data.TFRecordDataset(tf.io.gfile.glob(data["retrieval"])).as_numpy_iterator()
               ][:-1]  # the last record is the corrupt one
    images = tf.stack([augment.decode_and_center_crop(e["image/encoded"], 32) for e in records])
    image_emb = model.encode_image(images).numpy()
    captions = [c for e in records for c in e["caption"].numpy()]
    owners = np.repeat(np.arange(len(records)), [len(e["caption"]) for e in records])
    text_emb = model.encode_text(tokenizer(tf.constant(captions))).numpy()
    want = recall_at_k(image_emb, text_emb, owners)
    ret = results["retrieval"]
    assert ret["num_images"] == 11 and ret["num_captions"] == sum(CAPTIONS)
    assert ret["skipped_records"] == 1
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert ret[direction][str(k)] == pytest.approx(want[direction][k]), (direction, k)


def test_usage_errors():
    """(--help: tests/tools/test_cli.py)"""
    tool = os.path.join(REPO, "tools", "evaluate.py")
    proc = subprocess.run([sys.executable, tool, "--gin_file=models/tiny"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "nothing to evaluate" in proc.stderr

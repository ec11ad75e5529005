"""A checkpoint knows its tokenizer (issue 24 item 2, README "Reliability"): training records the
tokenizer's fingerprint in model_dir/tokenizer.json, an export in serving.json, and evaluate and
export refuse another SentencePiece model, naming both, unless --allow_other_tokenizer. Injected
fault: a tokenizer trained on other captions (the old code evaluated it at 0% top-1 with exit 0)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from basic_tf import config, from_gin
from basic_tf.data import tokenizer_record
from basic_tf.data.tokenizer import train_sentencepiece
from training_helpers import bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["train.steps_per_loop = 2", "train.checkpoint_interval = 2", "train.train_steps = 2"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A 2-step run of the tiny model on tiny_data: model_dir/ckpt-2 and tokenizer.json."""
    model_dir = str(tmp_path_factory.mktemp("tok") / "run")
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=8) + FAST)
    from_gin.train(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    """A SentencePiece model of other captions, with the same special ids and a vocabulary that
    fits the tiny text tower: only its fingerprint tells it apart."""
    captions = [f"an image of item {i} on a table near a window" for i in range(50)]
    return train_sentencepiece(captions, str(tmp_path_factory.mktemp("other") / "sp"),
                               vocab_size=40)


def _load(tiny_data, checkpoint, tokenizer, **kwargs):
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=8))
    return from_gin.load_trained_model(checkpoint, "--checkpoint", tokenizer, **kwargs)


def test_training_records_the_fingerprint(trained, tiny_data):
    recorded = json.load(open(os.path.join(trained, "tokenizer.json")))
    expected = tokenizer_record.fingerprint_of_file(tiny_data["tokenizer"])
    assert recorded == expected and recorded["vocab_size"] > 4


def test_another_tokenizer_is_refused_naming_both(trained, tiny_data, other_tokenizer):
    with pytest.raises(tokenizer_record.TokenizerMismatch) as caught:
        _load(tiny_data, trained, other_tokenizer)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"make_dataset.tokenizer_path='{other_tokenizer}' (flag): "
                            f"{other_tokenizer} (sha256 ")
    assert f"was trained with, {tiny_data['tokenizer']} (sha256 " in first
    assert os.path.join(trained, "tokenizer.json") in first and "--allow_other_tokenizer" in first
    # A checkpoint prefix finds the record in its folder too.
    with pytest.raises(tokenizer_record.TokenizerMismatch):
        _load(tiny_data, os.path.join(trained, "ckpt-2"), other_tokenizer)


def test_the_right_tokenizer_or_the_override_loads(trained, tiny_data, other_tokenizer):
    assert _load(tiny_data, trained, None)[3] == os.path.join(trained, "ckpt-2")
    _, tokenizer, _, restored = _load(tiny_data, trained, other_tokenizer,
                                      allow_other_tokenizer=True)
    assert restored and tokenizer_record.fingerprint(tokenizer.model_proto)["sha256"] == (
        tokenizer_record.fingerprint_of_file(other_tokenizer)["sha256"])


def test_a_resume_with_another_tokenizer_is_refused(trained, tiny_data, other_tokenizer,
                                                    tmp_path):
    model_dir = shutil.copytree(trained, str(tmp_path / "run"))
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=8) + FAST[:2] + [
        "train.train_steps = 4", f"make_dataset.tokenizer_path = '{other_tokenizer}'"])
    with pytest.raises(tokenizer_record.TokenizerMismatch,
                       match="is not the tokenizer this run was trained with"):
        from_gin.train(model_dir)
    assert sorted(f for f in os.listdir(model_dir) if f.startswith("ckpt-4")) == []


@pytest.mark.slow  # tools/export.py in subprocesses
def test_export_tool_refuses_then_records_the_override(trained, tiny_data, other_tokenizer,
                                                       tmp_path):
    names, templates = tmp_path / "classes.txt", tmp_path / "templates.txt"
    names.write_text("red\ngreen\nblue\nyellow\n")
    templates.write_text("a {c} square\n")
    command = [sys.executable, os.path.join(REPO, "tools", "export.py"),
               "--gin_file=models/tiny", f"--checkpoint={trained}",
               f"--export_dir={tmp_path / 'serve'}", f"--class_names={names}",
               f"--templates={templates}", f"--tokenizer={other_tokenizer}"] + [
        f"--gin_bindings={b}" for b in bindings(tiny_data, global_batch_size=8)]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "TokenizerMismatch" in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "serve" / "basic").exists()
    done = subprocess.run(command + ["--allow_other_tokenizer"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    serving = json.load(open(tmp_path / "serve" / "basic" / "1" / "assets" / "serving.json"))
    assert serving["tokenizer"]["sha256"] == (
        tokenizer_record.fingerprint_of_file(other_tokenizer)["sha256"])

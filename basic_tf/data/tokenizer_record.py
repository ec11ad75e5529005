"""Which tokenizer a model was trained with: its fingerprint, recorded and compared.

A model read with another SentencePiece model than the one it was trained with sees other ids
for the same words: evaluation gives chance accuracy and an export serves nonsense, without an
error. So training records the fingerprint of its tokenizer beside the checkpoints
(model_dir/tokenizer.json), an export records it in assets/serving.json, and evaluate and export
refuse another tokenizer, naming both, unless told explicitly (--allow_other_tokenizer).

A fingerprint is a dict {"sha256": hex digest of the .model proto, "vocab_size": pieces,
"path": where it was read (for messages only; not compared)}.
"""
import hashlib
import json
import os
from typing import Optional, Tuple

import sentencepiece as spm
import tensorflow as tf
from absl import logging

from basic_tf.files import write_atomically

FILENAME = "tokenizer.json"
OVERRIDE_FLAG = "--allow_other_tokenizer"


class TokenizerMismatch(ValueError):
    """A tokenizer whose fingerprint differs from the one recorded for the model."""


def fingerprint(model_proto: bytes, path: Optional[str] = None) -> dict:
    """The fingerprint of a SentencePiece model proto (see the module docstring)."""
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    return {"sha256": hashlib.sha256(model_proto).hexdigest(),
            "vocab_size": int(processor.get_piece_size()), "path": path}


def fingerprint_of_file(path: str) -> dict:
    """The fingerprint of the SentencePiece .model at `path` (through tf.io.gfile)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return fingerprint(f.read(), path)


def describe(print_: dict) -> str:
    """e.g. "/data/sp.model (sha256 3f2a9c1e7b04, 60 pieces)"."""
    return (f"{print_.get('path') or '<unnamed>'} (sha256 {print_['sha256'][:12]}, "
            f"{print_['vocab_size']} pieces)")


def same(a: dict, b: dict) -> bool:
    return a["sha256"] == b["sha256"] and a["vocab_size"] == b["vocab_size"]


def read(folder: str) -> Tuple[Optional[dict], str]:
    """(the fingerprint recorded in folder/tokenizer.json or None, that file's path)."""
    path = os.path.join(folder, FILENAME)
    if not tf.io.gfile.exists(path):
        return None, path
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f), path


def record(model_dir: str, print_: dict, write: bool = True) -> str:
    """Records the training tokenizer in model_dir/tokenizer.json (when `write`: the chief), or
    refuses a resume with another one than the recorded (TokenizerMismatch naming both and the
    file). Returns the file's path."""
    recorded, path = read(model_dir)
    if recorded is not None and not same(recorded, print_):
        raise TokenizerMismatch(
            f"make_dataset.tokenizer_path: {describe(print_)} is not the tokenizer this run was "
            f"trained with, {describe(recorded)} (recorded in {path}): the same words would get "
            "other ids. Give that tokenizer, or start a new model_dir")
    if recorded is None and write:
        write_atomically(path, json.dumps(print_, indent=1) + "\n", "model_dir")
    return path


def record_folder_of(checkpoint: str, unverified_dir: str) -> str:
    """The training model_dir of a restored checkpoint path: its folder (a ckpt-N prefix or a
    weights file), or that folder's parent for a checkpoint set aside in <model_dir>/
    `unverified_dir`/."""
    folder = os.path.dirname(checkpoint.rstrip("/"))
    if os.path.basename(folder) == unverified_dir:
        folder = os.path.dirname(folder)
    return folder


def check(print_: dict, source: str, checkpoint: str, unverified_dir: str,
          allow_other: bool = False) -> Optional[dict]:
    """Compares the tokenizer `print_` (named by `source`, e.g. "make_dataset.tokenizer_path=..
    (flag)") with the one recorded for `checkpoint`; TokenizerMismatch naming both unless
    allow_other (then a warning). Returns the recorded fingerprint (None: a model_dir from
    before the record, which is logged and accepted)."""
    recorded, path = read(record_folder_of(checkpoint, unverified_dir))
    if recorded is None:
        logging.warning("no %s beside checkpoint %s: cannot check that %s is its training "
                        "tokenizer", FILENAME, checkpoint, source)
        return None
    if not same(recorded, print_):
        message = (f"{source}: {describe(print_)} is not the tokenizer checkpoint {checkpoint} "
                   f"was trained with, {describe(recorded)} (recorded in {path}): the same words "
                   "would get other ids (zero-shot accuracy near chance)")
        if not allow_other:
            raise TokenizerMismatch(f"{message}. Give that tokenizer (--tokenizer), or pass "
                                    f"{OVERRIDE_FLAG} if you mean to use another")
        logging.warning("%s; used anyway (%s)", message, OVERRIDE_FLAG)
    return recorded

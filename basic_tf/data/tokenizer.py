"""SentencePiece tokenization in the graph: strings -> fixed-length int32 ids, EOS last.

Id convention of basic_tf (fixed by `train_sentencepiece`, checked when a model is loaded):
pad = 0, unk = 1, eos = 2, no bos. Each row is the caption's pieces, truncated to seq_len - 1,
then EOS, then padding 0. So the EOS is always the last non-padding token (what 'eos' pooling of
the text tower reads), also for truncated and empty captions.

`Tokenizer` is a tf.Module, so an export can track it (its SentencePiece resource goes into the
SavedModel; loading that SavedModel needs `import tensorflow_text`).
"""
import hashlib
import os
import tempfile
from typing import Iterable, Optional, Union

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow.python.trackable import resource
from tensorflow_text.python.ops.sentencepiece_tokenizer import gen_sentencepiece_tokenizer

from basic_tf.files import absolute

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2


def train_sentencepiece(captions: Iterable[str], model_prefix: str, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        hard_vocab_limit: bool = False, max_sentences: int = 10_000_000,
                        seed_sentencepiece_size: int = 1_000_000) -> str:
    """Trains a SentencePiece model on captions; writes `<model_prefix>.model` / `.vocab`.

    Returns the .model path. `hard_vocab_limit=False` lets a small corpus give a smaller
    vocabulary than asked for instead of failing (SentencePiece's limit depends on the corpus).
    Ids: pad 0, unk 1, eos 2, bos disabled (see module docstring).
    """
    if vocab_size < 4:
        raise ValueError(f"vocab_size={vocab_size}: must be >= 4 (pad, unk, eos + 1 piece)")
    lines = (" ".join(str(c).split()) for c in captions)
    lines = [c for c in lines if c]
    if not lines:
        raise ValueError("train_sentencepiece: no non-empty caption to train on")
    with tempfile.TemporaryDirectory() as local:  # SentencePiece writes local files only
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=os.path.join(local, "spm"),
            vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, hard_vocab_limit=hard_vocab_limit,
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            seed_sentencepiece_size=seed_sentencepiece_size,
            pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1, minloglevel=2)
        tf.io.gfile.makedirs(os.path.dirname(absolute(model_prefix)))
        for ext in (".vocab", ".model"):   # the .model last: its presence means both are whole
            tf.io.gfile.copy(os.path.join(local, "spm" + ext), model_prefix + ext, overwrite=True)
    return model_prefix + ".model"


class _NamedSentencepieceModel(resource.TrackableResource):
    """The SentencePiece model resource, named after a hash of the model proto.

    tf_text creates it without a name, which makes it private to the eager kernel that created
    it; tf.random.set_seed (keras.utils.set_random_seed) clears the eager kernel cache, which
    deleted the resource under every tokenizer made before (NotFoundError "Resource ...
    SentencepieceOp ... does not exist"). A shared name keeps it in the device's resource manager;
    the content hash makes sharing it between tokenizers of one model safe.
    """

    def __init__(self, model_proto: bytes):
        super().__init__()
        self._model = model_proto
        self._shared_name = "basic_tf_spm_" + hashlib.sha256(model_proto).hexdigest()[:24]
        _ = self.resource_handle  # creates the resource now, like tf_text

    def _create_resource(self):
        return gen_sentencepiece_tokenizer.sentencepiece_op(model=self._model,
                                                            shared_name=self._shared_name)


class Tokenizer(tf.Module):
    """tf.string [N] -> int32 [N, seq_len], in graph (tf.data maps, tf.function, SavedModel).

    Args:
      model: path of a SentencePiece .model file, or its serialized proto bytes.
      seq_len: fixed output length (>= 2: at least one piece and the EOS).
    """

    def __init__(self, model: Union[str, bytes], seq_len: int, name: Optional[str] = None):
        super().__init__(name=name)
        if seq_len < 2:
            raise ValueError(f"Tokenizer seq_len={seq_len}: must be >= 2 (a piece and the EOS)")
        if isinstance(model, str):
            if not tf.io.gfile.exists(model):
                raise FileNotFoundError(f"SentencePiece model {model!r} not found; train one "
                                        "with tools/train_tokenizer.py")
            with tf.io.gfile.GFile(model, "rb") as f:
                model = f.read()
        processor = spm.SentencePieceProcessor(model_proto=model)
        ids = {"pad": processor.pad_id(), "unk": processor.unk_id(), "eos": processor.eos_id()}
        if ids != {"pad": PAD_ID, "unk": UNK_ID, "eos": EOS_ID}:
            raise ValueError(f"SentencePiece model has special ids {ids}; basic_tf needs "
                             f"pad={PAD_ID}, unk={UNK_ID}, eos={EOS_ID} (train it with "
                             "basic_tf.data.tokenizer.train_sentencepiece)")
        self.model_proto = bytes(model)
        self.seq_len = int(seq_len)
        self.vocab_size = int(processor.get_piece_size())
        self._sp = tf_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32,
                                                  add_bos=False, add_eos=False)
        self._sp._model_resource = _NamedSentencepieceModel(self.model_proto)

    def __call__(self, strings: tf.Tensor) -> tf.Tensor:
        """tf.string [N] -> int32 [N, seq_len]: pieces[:seq_len-1] + [EOS] + [0]*padding."""
        strings = tf.convert_to_tensor(strings, tf.string)
        pieces = self._sp.tokenize(strings)[:, :self.seq_len - 1]
        ids = pieces.to_tensor(default_value=PAD_ID, shape=[strings.shape[0], self.seq_len])
        # EOS right after the pieces. (Not a ragged concat: its row-count assert puts a Merge
        # node with a control input in every graph that tokenizes, and Grappler's loop
        # optimizer logs a C++ warning for it that TF_CPP_MIN_LOG_LEVEL does not hide.)
        eos_at = tf.range(self.seq_len)[None, :] == tf.cast(pieces.row_lengths(), tf.int32)[:, None]
        return tf.where(eos_at, tf.constant(EOS_ID, tf.int32), ids)

    def detokenize(self, ids: tf.Tensor) -> tf.Tensor:
        """int32 [N, L] -> tf.string [N]; padding and EOS are dropped."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        ragged = tf.ragged.boolean_mask(ids, (ids != PAD_ID) & (ids != EOS_ID))
        return self._sp.detokenize(ragged)

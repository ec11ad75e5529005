"""Tokenizer: in-graph ids equal the sentencepiece library's, padding 0, EOS last, truncation."""
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from basic_tf.data import tokenizer

TEXTS = ["a red thing number 7", "", "picture 12 of blue " * 6, "ankle boot"]


def reference_ids(model_path, texts, seq_len):
    """Independent reference: the sentencepiece Python library, then the basic_tf layout."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    out = np.zeros([len(texts), seq_len], np.int32)
    for i, t in enumerate(texts):
        ids = sp.encode(t)[:seq_len - 1] + [sp.eos_id()]
        out[i, :len(ids)] = ids
    return out


def test_ids_match_sentencepiece_with_eos_last_and_padding_zero(sp_model):
    tok = tokenizer.Tokenizer(sp_model, seq_len=10)
    ids = tok(tf.constant(TEXTS)).numpy()
    assert ids.dtype == np.int32 and ids.shape == (4, 10)
    np.testing.assert_array_equal(ids, reference_ids(sp_model, TEXTS, 10))
    assert ids[1].tolist() == [tokenizer.EOS_ID] + [0] * 9          # empty caption
    assert ids[2, -1] == tokenizer.EOS_ID                               # truncated: EOS kept
    lengths = (ids != tokenizer.PAD_ID).sum(1)
    assert all(ids[i, lengths[i] - 1] == tokenizer.EOS_ID for i in range(4))  # EOS = last real
    assert (ids == tokenizer.EOS_ID).sum(1).tolist() == [1, 1, 1, 1]   # one EOS per row
    assert tok.detokenize(ids).numpy()[3] == b"ankle boot"


def test_same_ids_from_proto_bytes_in_tf_function_and_tf_data(sp_model):
    tok = tokenizer.Tokenizer(sp_model, seq_len=6)
    from_bytes = tokenizer.Tokenizer(open(sp_model, "rb").read(), seq_len=6)
    assert from_bytes.model_proto == tok.model_proto
    assert tok.vocab_size == spm.SentencePieceProcessor(model_file=sp_model).get_piece_size()
    eager = tok(TEXTS).numpy()
    np.testing.assert_array_equal(tf.function(from_bytes)(tf.constant(TEXTS)).numpy(), eager)
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(2).map(tok)
    assert ds.element_spec.shape.as_list() == [None, 6]
    np.testing.assert_array_equal(np.concatenate(list(ds.as_numpy_iterator())), eager)


def test_tokenizer_survives_a_new_random_seed(sp_model):
    """tf_text's SentencePiece resource is owned by its eager kernel, and tf.random.set_seed
    clears the eager kernel cache: a tokenizer made before a seed was set used to fail after it
    with NotFoundError (resource does not exist)."""
    tok = tokenizer.Tokenizer(sp_model, seq_len=8)
    expected = tok(TEXTS).numpy()
    tf.random.set_seed(1)
    np.testing.assert_array_equal(tok(TEXTS).numpy(), expected)
    np.testing.assert_array_equal(tok.detokenize(expected).numpy(),
                                  tokenizer.Tokenizer(sp_model, 8).detokenize(expected).numpy())


def test_saved_model_round_trip(sp_model, tmp_path):
    """Export tracks the tokenizer module; the loaded function gives the same ids."""
    tok = tokenizer.Tokenizer(sp_model, seq_len=8)
    tok.tokenize = tf.function(tok.__call__, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(tok, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_array_equal(loaded.tokenize(tf.constant(TEXTS)).numpy(), tok(TEXTS).numpy())


def test_rejects_models_with_other_special_ids(tmp_path):
    prefix = str(tmp_path / "other")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world", "hello there"] * 20),
                                   model_prefix=prefix, vocab_size=12, hard_vocab_limit=False,
                                   minloglevel=2)  # default ids: unk 0, bos 1, eos 2, no pad
    with pytest.raises(ValueError, match=r"needs pad=0, unk=1, eos=2"):
        tokenizer.Tokenizer(prefix + ".model", 8)
    with pytest.raises(FileNotFoundError, match="tools/train_tokenizer.py"):
        tokenizer.Tokenizer(str(tmp_path / "missing.model"), 8)
    with pytest.raises(ValueError, match="seq_len=1"):
        tokenizer.Tokenizer(prefix + ".model", 1)

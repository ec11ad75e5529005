"""basic_tf/from_gin.py builds the config objects from an experiment's bindings, and the
modules below it take them as arguments (that no module below the top reads gin is
tests/test_gin_boundary.py)."""
import pytest


def test_models_and_their_from_config_never_read_gin():
    """The models take configs as arguments: the same model whatever gin holds."""
    from basic_tf import config, from_gin
    from basic_tf.models import DualEncoder
    config.parse(["models/tiny"])
    model = from_gin.dual_encoder()
    config.parse(["models/tiny"], ["dual_encoder_config.embed_dim = 8",
                                   "text_tower_config.max_len = 4"])
    again = DualEncoder.from_config(model.get_config())
    assert (again.embed_dim, again.max_text_len) == (model.embed_dim, model.max_text_len)
    assert from_gin.dual_encoder().embed_dim == 8
    with pytest.raises(TypeError):
        DualEncoder()  # no configs, no model: nothing is read from gin


def test_load_trained_model_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path):
    """evaluate, export and the demo load through one function; a tokenizer with more pieces
    than the text tower's table is refused, naming both (it used to be the demo's check only)."""
    from basic_tf import config, from_gin
    from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece

    spm = train_sentencepiece([f"a photo number {i}" for i in range(40)], str(tmp_path / "sp"),
                              vocab_size=30)
    pieces = Tokenizer(spm, 16).vocab_size      # about 30: SentencePiece decides
    config.parse(["tiny"], ["make_dataset.image_size = 32", "make_dataset.seq_len = 16",
                            "text_tower_config.vocab_size = 20"])
    with pytest.raises(ValueError, match=rf"^tokenizer .*sp.model has {pieces} pieces but "
                       r"text_tower_config.vocab_size=20"):
        from_gin.load_trained_model(None, "--checkpoint", tokenizer_path=spm)
    config.parse(["tiny"], ["make_dataset.image_size = 32", "make_dataset.seq_len = 16"])
    model, tokenizer, data, restored = from_gin.load_trained_model(None, "--untrained",
                                                                   tokenizer_path=spm)
    assert (restored, data.seq_len, tokenizer.seq_len, model.image_size) == (None, 16, 16, 32)

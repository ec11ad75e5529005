"""Fixtures for the data room: a small SentencePiece model and JPEG shards."""
import pytest

from basic_tf.data import sources, tokenizer, writer
from data_helpers import make_records


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> str:
    """A small unigram SentencePiece model trained on caption-like text (vocab 64)."""
    d = tmp_path_factory.mktemp("spm")
    captions = [c for r in make_records(200) for c in r.captions]
    captions += sources.class_captions("ankle boot", sources.DEFAULT_CAPTION_TEMPLATES)
    return tokenizer.train_sentencepiece(captions, str(d / "sp"), vocab_size=64)


@pytest.fixture(scope="session")
def shards_120(tmp_path_factory):
    """120 JPEG records in 4 shards of 30 (with stats sidecars): (glob pattern, records)."""
    d = tmp_path_factory.mktemp("shards")
    records = make_records(120)
    for k in range(4):
        writer.write_tfrecords(records[30 * k:30 * (k + 1)], str(d / f"part{k}"),
                               show_progress=False)
    return str(d / "part*.tfrecord"), records

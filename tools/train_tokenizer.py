r"""Trains the SentencePiece model of the text tower from captions.

Ids follow the basic_tf convention (pad 0, unk 1, eos 2, no bos; see basic_tf/data/tokenizer.py).
Captions come from basic_tf TFRecord shards (every caption of every record) and/or a text file
(one caption per line).

Example:
  python3 tools/train_tokenizer.py --shards='/data/fm/train-*.tfrecord' --vocab_size=1000 \
      --model_prefix=/data/fm/spm
  -> /data/fm/spm.model (use as make_dataset.tokenizer_path) and /data/fm/spm.vocab
"""
from absl import app, flags

from basic_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("shards", None, "Glob of basic_tf TFRecord shards to read captions from.")
flags.DEFINE_string("captions_file", None, "Text file with one caption per line.")
flags.DEFINE_string("model_prefix", None, "Output prefix: writes <prefix>.model and .vocab.")
flags.DEFINE_integer("vocab_size", 32000, "Vocabulary size, special ids included. Small "
                     "corpora give fewer pieces than asked (no error).")
flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "char", "word"],
                  "SentencePiece model type.")
flags.DEFINE_float("character_coverage", 1.0, "Share of characters the vocabulary covers "
                   "(0.9995 suits large-alphabet languages).")
flags.DEFINE_integer("max_sentences", 10_000_000, "Captions sampled for training at most.")


def _captions():
    if FLAGS.shards:
        import tensorflow as tf

        from basic_tf.data import schema

        for path in schema.list_shards(FLAGS.shards):
            for record in tf.data.TFRecordDataset(path).ignore_errors().as_numpy_iterator():
                example = tf.train.Example.FromString(record)
                for caption in example.features.feature[schema.CAPTION_KEY].bytes_list.value:
                    yield caption.decode("utf-8", "replace")
    if FLAGS.captions_file:
        import tensorflow as tf

        with tf.io.gfile.GFile(FLAGS.captions_file, "r") as f:
            for line in f:
                yield line.rstrip("\n")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not (FLAGS.shards or FLAGS.captions_file) or not FLAGS.model_prefix:
        raise app.UsageError("give --model_prefix and --shards and/or --captions_file")
    from basic_tf.data import tokenizer

    path = tokenizer.train_sentencepiece(_captions(), FLAGS.model_prefix, FLAGS.vocab_size,
                                         model_type=FLAGS.model_type,
                                         character_coverage=FLAGS.character_coverage,
                                         max_sentences=FLAGS.max_sentences)
    vocab = tokenizer.Tokenizer(path, seq_len=2).vocab_size
    print(f"wrote {path} (vocabulary {vocab} pieces, asked {FLAGS.vocab_size})")


if __name__ == "__main__":
    cli.run(main)

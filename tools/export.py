r"""Exports a trained basic_tf model for TF Serving: <export_dir>/<model>/<version>/, models.config.

The model is built from the experiment's gin files and restored from a training checkpoint; the
SentencePiece model, token length and evaluation crop come from the same gin files
(make_dataset.tokenizer_path, make_dataset.seq_len, make_dataset.eval_crop_fraction,
make_dataset.antialias) unless given as flags. Class names and templates are shipped set names
(basic_tf/zeroshot/data) or .txt/.json files.

Example:
  python3 tools/export.py --gin_file=tiny --checkpoint=/tmp/tiny/model.weights.h5 \
      --export_dir=/tmp/serve --model_name=fashion --class_names=fashion_mnist \
      --templates=fashion_mnist
  Then serve it (see basic_tf/export/README.md):
  docker run -p 8501:8501 -v /tmp/serve:/models tensorflow/serving \
      --model_config_file=/models/models.config   # export with --base_path_prefix=/models
"""
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin files (path or name in gin/), e.g. tiny.")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings, e.g. 'export_for_serving.top_k=3'.")
flags.DEFINE_string("checkpoint", None, "Trained weights: a Keras .weights.h5 file, a TF "
                    "checkpoint prefix (tf.train.Checkpoint(model=...)) or a directory (its "
                    "latest TF checkpoint). Required unless --untrained.")
flags.DEFINE_bool("untrained", False, "Export freshly initialised weights (smoke tests only).")
flags.DEFINE_string("tokenizer", None,
                    "SentencePiece .model; default: gin make_dataset.tokenizer_path.")
flags.DEFINE_integer("seq_len", None, "Token ids per text; default gin make_dataset.seq_len, else "
                     "the text tower's max_text_len.")
flags.DEFINE_string("export_dir", None, "Root folder TF Serving reads (holds models.config).")
flags.DEFINE_string("model_name", "basic", "Served model name: /v1/models/<name>:predict.")
flags.DEFINE_integer("version", None, "Version folder (integer >= 1); default: next free one.")
flags.DEFINE_string("class_names", None, "Class-name set (e.g. imagenet1k) or .txt/.json file.")
flags.DEFINE_string("templates", None, "Template set (e.g. imagenet1k) or .txt/.json file.")
flags.DEFINE_string("base_path_prefix", None, "Where the server sees --export_dir, for "
                    "models.config (e.g. /models in a container). Default: --export_dir.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    missing = [f for f in ("export_dir", "class_names", "templates") if not FLAGS[f].value]
    if missing or not (FLAGS.checkpoint or FLAGS.untrained):
        raise app.UsageError(f"give --{', --'.join(missing or ['checkpoint (or --untrained)'])}")
    from basic_tf import config
    from basic_tf.data.tokenizer import Tokenizer
    from basic_tf.export import export_for_serving
    from basic_tf.models import DualEncoder
    from basic_tf.zeroshot import prompts
    from basic_tf.zeroshot.run import restore_model

    config.parse(FLAGS.gin_file, FLAGS.gin_param)
    model = DualEncoder()
    if FLAGS.checkpoint:
        logging.info("restored the model from %s", restore_model(model, FLAGS.checkpoint))
    tokenizer_path = FLAGS.tokenizer or config.bound_value("make_dataset.tokenizer_path", None)
    if not tokenizer_path:
        raise app.UsageError("give --tokenizer (no make_dataset.tokenizer_path in the gin files)")
    seq_len = FLAGS.seq_len or config.bound_value("make_dataset.seq_len", model.max_text_len)
    path = export_for_serving(
        model, Tokenizer(tokenizer_path, seq_len), FLAGS.export_dir,
        prompts.load_class_names(FLAGS.class_names), prompts.load_templates(FLAGS.templates),
        model_name=FLAGS.model_name, version=FLAGS.version,
        crop_fraction=config.bound_value("make_dataset.eval_crop_fraction", 1.0),
        antialias=config.bound_value("make_dataset.antialias", False),
        base_path_prefix=FLAGS.base_path_prefix)
    print(f"exported {path}")


if __name__ == "__main__":
    app.run(main)

r"""Exports a trained basic_tf model for TF Serving: <export_dir>/<model>/<version>/, models.config.

The model is built from the experiment's gin files and restored from a training checkpoint (one
that is no verified state of its run, under <model_dir>/unverified/ or past the newest checkpoint
its index lists, is refused unless --allow_unverified). Images
and texts are seen exactly as training and tools/evaluate.py see them: image size, token length,
tokenizer, evaluation crop and antialiasing are the gin file's make_dataset bindings, macros
resolved (basic_tf/from_gin_data.py data_config); --tokenizer / --seq_len override them explicitly.
Class names and templates are shipped set names (basic_tf/zeroshot/data) or .txt/.json files.

When the gin file names labelled records (make_dataset.eval_file_pattern, else file_pattern), the
class names must be in the records' label order (the first mismatch is an error), so that served
class ids are the records' labels; --labels_by_name re-orders them by name instead. Prompts cut at
the token length and class names with unknown pieces are reported; a class whose every prompt
lost its name is refused unless --allow_nameless_classes.

Example:
  python3 tools/export.py --gin_file=my_experiment.gin --checkpoint=/tmp/mine \
      --export_dir=/tmp/serve --model_name=mine --class_names=/data/mine/train.class_names.json \
      --templates=/data/mine/prompts.txt
  Then serve it (see basic_tf/export/README.md):
  docker run -p 8501:8501 -v /tmp/serve:/models tensorflow/serving \
      --model_config_file=/models/models.config   # export with --base_path_prefix=/models
"""
from absl import app, flags, logging

from basic_tf import cli

FLAGS = flags.FLAGS
cli.define_gin_flags(example="'export_for_serving.top_k=3'")
cli.define_trained_model_flags()
cli.define_class_flags()
flags.DEFINE_string("export_dir", None, "Root folder TF Serving reads (holds models.config).")
flags.DEFINE_string("model_name", "basic", "Served model name: /v1/models/<name>:predict.")
flags.DEFINE_integer("version", None, "Version folder (integer >= 1); default: next free one.")
flags.DEFINE_bool("allow_nameless_classes", False, "Export even if a class lost its name in "
                  "every prompt (prompts cut at the token length); refused by default.")
flags.DEFINE_string("base_path_prefix", None, "Where the server sees --export_dir, for "
                    "models.config (e.g. /models in a container). Default: --export_dir.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    missing = [f for f in ("export_dir", "class_names", "templates") if not FLAGS[f].value]
    if missing:
        raise app.UsageError(f"give --{', --'.join(missing)}")
    checkpoint, source = cli.checkpoint_from_flags()
    from basic_tf import config
    from basic_tf.from_gin import load_trained_model
    from basic_tf.from_gin_data import export_for_serving
    from basic_tf.zeroshot import labels, prompts

    cli.parse_gin_flags()
    model, tokenizer, data, restored = load_trained_model(
        checkpoint, source, FLAGS.tokenizer, FLAGS.seq_len,
        allow_unverified=FLAGS.allow_unverified,
        allow_other_tokenizer=FLAGS.allow_other_tokenizer)
    if restored:
        logging.info("restored the model from %s", restored)
    records = (config.bound_value("make_dataset.eval_file_pattern", None)
               or config.bound_value("make_dataset.file_pattern", None))
    class_names = labels.names_for_export(prompts.load_class_names(FLAGS.class_names), records,
                                          FLAGS.labels_by_name)
    path = export_for_serving(
        model, tokenizer, FLAGS.export_dir, class_names, prompts.load_templates(FLAGS.templates),
        model_name=FLAGS.model_name, version=FLAGS.version,
        crop_fraction=data.eval_crop_fraction, antialias=data.antialias,
        base_path_prefix=FLAGS.base_path_prefix,
        allow_nameless_classes=FLAGS.allow_nameless_classes)
    print(f"exported {path}")


if __name__ == "__main__":
    cli.run(main)

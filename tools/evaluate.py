r"""Zero-shot evaluation of a trained basic_tf model: classification top-1/top-5 over TFDS sets or
labelled TFRecords, image-text retrieval R@1/5/10 over captioned TFRecords.

The model is built from the experiment's gin files and restored from a training checkpoint (one
that is no verified state of its run, under <model_dir>/unverified/ or past the newest checkpoint
its index lists, is refused unless --allow_unverified). Images
and texts are seen exactly as training sees them: image size, token length, tokenizer, evaluation
crop and antialiasing are the gin file's make_dataset bindings, macros resolved
(basic_tf/from_gin_data.py data_config); --tokenizer / --seq_len override them explicitly. Class
names and templates are shipped set names (basic_tf/zeroshot/data: imagenet1k, cifar10, cifar100,
mnist, fashion_mnist, ...) or .txt/.json files; TFDS sets have defaults. Nothing is downloaded: TFDS
data must already be prepared in --tfds_data_dir (the error says how).

--tfrecords: the class names must be in the records' label order (records store each label's
name; the first mismatch is an error), or give --labels_by_name to match them by name.

Examples:
  # an experiment gin file that binds make_dataset.* (file_pattern, tokenizer_path, ...)
  python3 tools/evaluate.py --gin_file=my_experiment.gin --model_dir=/tmp/mine \
      --tfrecords='/data/mine/test-*.tfrecord' --class_names=/data/mine/train.class_names.json \
      --templates=/data/mine/prompts.txt --predictions=/tmp/mine/predictions.csv
  # the output of `basic-demo --out /tmp/demo` (the demo binds its tokenizer at run time)
  python3 tools/evaluate.py --gin_file=demo --model_dir=/tmp/demo/model \
      --tokenizer=/tmp/demo/data/spm.model --tfrecords='/tmp/demo/data/test-*.tfrecord' \
      --class_names=fashion_mnist --templates=fashion_mnist --strategy=mirrored
  # make_dataset bindings given on the training command line must be given here too
  python3 tools/evaluate.py --gin_file=tiny --gin_bindings=make_dataset.image_size=32 \
      --gin_bindings=make_dataset.seq_len=16 --tokenizer=/data/sp.model --model_dir=/tmp/tiny \
      --tfds_name=imagenet2012 --tfds_data_dir=~/tensorflow_datasets --out=/tmp/tiny/eval.json

Writes --out (JSON: per task counts, accuracies, per-class accuracy, confusion matrix up to 100
classes, R@K), <out>.txt (the table printed at the end) and <out>.<task>.confusion.png.
"""
from absl import app, flags

from basic_tf import cli

FLAGS = flags.FLAGS
cli.define_gin_flags(example="'evaluate_classification.k=10'")
cli.define_trained_model_flags()
flags.DEFINE_string("model_dir", None, "Training model_dir: its latest checkpoint is evaluated "
                    "(same as --checkpoint=<model_dir>).")
cli.define_strategy_flags()
cli.define_class_flags()
flags.DEFINE_multi_string("tfds_name", [], "TFDS classification set(s) prepared locally: "
                          "imagenet2012, imagenet_v2, imagenet_a, imagenet_r, imagenet_sketch, "
                          "cifar10, cifar100, mnist, fashion_mnist, or any other with "
                          "--class_names/--templates.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir (default: TFDS's, "
                    "~/tensorflow_datasets).")
flags.DEFINE_string("split", None, "TFDS split (default per set: validation for imagenet2012, "
                    "else test).")
flags.DEFINE_string("tfrecords", None, "Glob of labelled TFRecord shards (basic_tf.data.schema) "
                    "for classification; needs --class_names and --templates.")
flags.DEFINE_string("retrieval_tfrecords", None, "Glob of captioned TFRecord shards for "
                    "image<->text retrieval.")
flags.DEFINE_string("predictions", None, "Write per-image predictions here: .csv or .jsonl "
                    "(task, example id, label, top-k class names and scores; --tfrecords ids "
                    "are strings, which a TPU infeed cannot carry).")
flags.DEFINE_integer("batch_size", 256, "Global evaluation batch size (all replicas).")
flags.DEFINE_integer("max_captions", 5, "Retrieval: captions kept per image.")
flags.DEFINE_integer("max_steps", None, "Stop each task after this many steps (smoke runs).")
flags.DEFINE_string("out", None, "Results JSON path (also writes <out>.txt and confusion PNGs).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not (FLAGS.tfds_name or FLAGS.tfrecords or FLAGS.retrieval_tfrecords):
        raise app.UsageError("nothing to evaluate: give --tfds_name, --tfrecords and/or "
                             "--retrieval_tfrecords")
    if FLAGS.tfrecords and not (FLAGS.class_names and FLAGS.templates):
        raise app.UsageError("--tfrecords needs --class_names and --templates")
    checkpoint, source = cli.checkpoint_from_flags("model_dir")
    from basic_tf import from_gin_data   # the zero-shot tasks and run_and_report, configured
    from basic_tf.from_gin import load_trained_model
    from basic_tf.zeroshot import labels, prompts, report

    if FLAGS.predictions:
        report.check_predictions_path(FLAGS.predictions)
    cli.parse_gin_flags()
    strategy = cli.strategy_from_flags()
    model, tokenizer, data, restored = load_trained_model(checkpoint, source, FLAGS.tokenizer,
                                                          FLAGS.seq_len, strategy,
                                                          FLAGS.allow_unverified,
                                                          FLAGS.allow_other_tokenizer)
    tasks = [from_gin_data.tfds_task(name, data, FLAGS.tfds_data_dir, FLAGS.split,
                                     FLAGS.batch_size, FLAGS.class_names, FLAGS.templates)
             for name in FLAGS.tfds_name]
    if FLAGS.tfrecords:
        class_names = prompts.load_class_names(FLAGS.class_names)
        label_map = labels.label_map_for(class_names, FLAGS.tfrecords, FLAGS.labels_by_name)
        tasks.append(from_gin_data.tfrecord_task(FLAGS.tfrecords, class_names,
                                                 prompts.load_templates(FLAGS.templates), data,
                                                 FLAGS.batch_size, label_map=label_map,
                                                 with_ids=bool(FLAGS.predictions)))
    if FLAGS.retrieval_tfrecords:
        tasks.append(from_gin_data.retrieval_task(FLAGS.retrieval_tfrecords, tokenizer, data,
                                                  FLAGS.batch_size, FLAGS.max_captions))
    from_gin_data.run_and_report(
        model, tokenizer, tasks, strategy, FLAGS.out,
        metadata={"checkpoint": restored or "untrained", "gin_files": FLAGS.gin_file,
                  "gin_bindings": FLAGS.gin_bindings, "strategy": FLAGS.strategy,
                  "replicas": strategy.num_replicas_in_sync, "data_config": data.as_dict()},
        max_steps=FLAGS.max_steps, predictions_path=FLAGS.predictions)


if __name__ == "__main__":
    cli.run(main)

r"""Starts an experiment on your own data: one complete, commented gin file that trains, evaluates
and exports with no edits.

Examples (shards written by basic-make-tfrecords / tools/make_tfrecords.py):
  basic-new-experiment --train='my_data/tfrecords/train-*.tfrecord' \
      --eval='my_data/tfrecords/test-*.tfrecord' --out_dir=my_exp
  basic-new-experiment --train=my_data/train.csv --eval=my_data/test.csv --label_column=label \
      --class_names_file=my_data/classes.txt --out_dir=my_exp    # shards into my_exp/data
  basic-new-experiment --train='shards/{00000..00099}.tar' --out_dir=web_exp  # webdataset tars
  basic-new-experiment --train='i2d/*.tfrecord' --out_dir=i2d_exp   # img2dataset TFRecords
  then run the three commands it prints (basic-train, basic-evaluate, basic-export).

It reads the shards (image sizes and channels, class names, captions), trains a SentencePiece
vocabulary on the training captions (or takes --tokenizer), reads prompt templates off the
captions, and chooses the image size, sequence length, model size, batch, micro-batches and
steps (the memory check is basic_tf.planner's). Writes into --out_dir: experiment.gin (every
value written out and commented), spm.model/.vocab, class_names.txt (label order) and
templates.txt ('{c}' = class name); prints the train / evaluate / export commands. The logic is
basic_tf/new_experiment.py. Exit status 2 with a one-line message for data or flags it cannot use
(--verbosity=1: the traceback).
"""
import sys

from absl import app, flags

from basic_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("train", None, "Glob of the training TFRecord shards (basic_tf schema or "
                    "img2dataset's, read as they are), or a .csv/.jsonl table, class-folder "
                    "root or webdataset tars ('shards/{00000..00099}.tar', globs) written as "
                    "shards into <out_dir>/data first, as basic-make-tfrecords does.")
flags.DEFINE_string("eval", None, "Evaluation data, as --train (labelled: zero-shot "
                    "classification; captions only: retrieval). Optional.")
flags.DEFINE_string("label_column", None, "Tables: integer label column (as "
                    "basic-make-tfrecords).")
flags.DEFINE_string("class_names_file", None, "Tables: class names, one per line in label order "
                    "(as basic-make-tfrecords).")
flags.DEFINE_string("out_dir", None, "Where experiment.gin, the tokenizer, class_names.txt and "
                    "templates.txt go.")
flags.DEFINE_string("tokenizer", None, "An existing SentencePiece .model to use instead of "
                    "training one on the training captions.")
flags.DEFINE_integer("vocab_size", 1000, "Vocabulary to ask SentencePiece for (a small caption "
                     "set gives fewer pieces; the gin file uses the real count).")
flags.DEFINE_float("epochs", 10.0, "Passes over the training records (sets train.train_steps; "
                   "at least 100 steps).")
flags.DEFINE_integer("train_steps", None, "Training steps instead of --epochs.")
flags.DEFINE_integer("image_size", None, "Model input side in pixels; default: the median "
                     "shorter image side rounded to a multiple of 8, at most 224.")
flags.DEFINE_integer("max_batch", 256, "Largest contrastive batch to consider.")
flags.DEFINE_float("device_memory_gb", None, "Memory of the training device, GiB; default: half "
                   "of this machine's RAM (a CPU run).")
flags.DEFINE_string("model_dir", None, "Checkpoint folder named in the printed commands "
                    "(default <out_dir>/model).")
flags.DEFINE_string("export_dir", None, "TF Serving folder named in the printed commands "
                    "(default <out_dir>/serving).")
flags.mark_flags_as_required(["train", "out_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    import os

    from basic_tf import new_experiment
    from basic_tf.files import absolute

    data = {"train": FLAGS.train, "eval": FLAGS.eval}
    try:
        for split, source in data.items():
            if source and new_experiment.is_source(source):
                data[split] = new_experiment.shards_from_source(
                    source, os.path.join(FLAGS.out_dir, "data", split), FLAGS.label_column,
                    FLAGS.class_names_file, flag=f"--{split}")
        exp, train, evaluation = new_experiment.choose(
            data["train"], data["eval"], FLAGS.out_dir, tokenizer=FLAGS.tokenizer,
            vocab_size=FLAGS.vocab_size, epochs=FLAGS.epochs, train_steps=FLAGS.train_steps,
            image_size=FLAGS.image_size, max_batch=FLAGS.max_batch,
            device_memory_gb=FLAGS.device_memory_gb)
        model_dir = absolute(FLAGS.model_dir or os.path.join(exp.out_dir, "model"))
        export_dir = absolute(FLAGS.export_dir or os.path.join(exp.out_dir, "serving"))
        path = new_experiment.write(exp, train, evaluation, model_dir, export_dir)
    except (ValueError, FileNotFoundError) as e:   # bad data or flag: the message names it
        if FLAGS.verbosity >= 1:                    # --verbosity=1: the full traceback
            raise
        print(f"basic-new-experiment: {cli.error_text(e)}", file=sys.stderr)
        return 2
    print(f"wrote {path}: image {exp.image_size}x{exp.image_size}, {exp.seq_len} tokens, "
          f"'{exp.model_size}' model, batch {exp.global_batch} in {exp.num_micro_batches} "
          f"micro-batch(es), {exp.train_steps} steps, {len(exp.class_names)} classes")
    print("next:")
    for line in new_experiment.command_lines(exp, model_dir, export_dir):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    cli.run(main)

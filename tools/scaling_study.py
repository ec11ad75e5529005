r"""Contrastive batch-size scaling study: zero-shot accuracy, retrieval and generalisation gap
against batch size, several seeds, under one protocol per command (JSON + PNG + table).
Not part of `python -m benchmarks`. The design is in benchmarks/scaling_study.py; the results and
their reading in benchmarks/README.md.

  nice -n 19 python3 tools/scaling_study.py --protocol=examples  # grids, equal examples seen
  nice -n 19 python3 tools/scaling_study.py --protocol=steps     # grids, equal optimizer steps
  python3 tools/scaling_study.py --dataset=grid --protocol=steps --batch_sizes=16,512 \
      --seeds=0 --train_steps=5 --train_grids=2000 --eval_examples=1000 \
      --output_dir=/tmp/study     # a quick smoke run

Results go to <output_dir>/scaling_study_<dataset>_<protocol>.json after every run (rerunning
the same command resumes: finished runs are kept); <output_dir>/scaling_study_<dataset>.png
shows every protocol whose JSON is in <output_dir>. Batches above --max_micro_batch use BASIC's
exact accumulation. Needs the Debian package dataset-fashion-mnist (tools/install.sh).
"""
import os
import tempfile

from absl import flags, logging

from basic_tf import cli
from benchmarks import scaling_plot, scaling_study

FLAGS = flags.FLAGS
cli.define_gin_flags(["demo"], example="'TRAIN_STEPS = 100' (the dataset's own come first: "
                     "grid sets IMAGE_SIZE = 56 and SEQ_LEN = 64)")
flags.DEFINE_enum("dataset", "grid", ["grid", "fashion_mnist"],
                  "grid: four garments per 56x56 image, captions naming them in position (10^4 "
                  "caption contents); fashion_mnist: single garments, 10 contents (first study).")
flags.DEFINE_enum("protocol", "examples", list(scaling_study.PROTOCOLS),
                  "examples: every batch size sees --examples_seen examples; steps: every batch "
                  "size takes --train_steps optimizer steps.")
flags.DEFINE_list("batch_sizes", [str(b) for b in scaling_study.BATCH_SIZES],
                  "Contrastive batch sizes.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one run per batch size and seed.")
flags.DEFINE_integer("examples_seen", 32_000,
                     "Training examples per run (protocol examples).")
flags.DEFINE_integer("train_steps", 100, "Optimizer steps per run (protocol steps).")
flags.DEFINE_float("base_lr", 2e-3, "Peak AdamW learning rate (10% warm-up, cosine to 0).")
flags.DEFINE_enum("lr_scaling", "none", ["none", "sqrt"],
                  "none: --base_lr at every batch size; sqrt: --base_lr * sqrt(B / 256).")
flags.DEFINE_integer("max_micro_batch", 256, "Larger batches are accumulated in micro-batches "
                     "of this size (BASIC's exact contrastive accumulation).")
flags.DEFINE_integer("eval_batch", 256, "Batch size of the held-out - training loss gap.")
flags.DEFINE_integer("eval_examples", 10_000, "Fashion-MNIST garments per zero-shot split.")
flags.DEFINE_integer("train_grids", 40_000, "Training grids (from training images only).")
flags.DEFINE_integer("heldout_grids", 2_500, "Held-out grids (from test images only).")
flags.DEFINE_integer("retrieval_pairs", 1_000, "Held-out grids used for retrieval R@K.")
flags.DEFINE_string("output_dir", os.path.join("benchmarks", "results"),
                    "Where the JSON and PNG go.")

DATASET_BINDINGS = {"grid": ["IMAGE_SIZE = 56", "SEQ_LEN = 64"], "fashion_mnist": []}


def main(argv):
    del argv
    settings = scaling_study.StudySettings(
        gin_files=FLAGS.gin_file,
        gin_bindings=DATASET_BINDINGS[FLAGS.dataset] + list(FLAGS.gin_bindings),
        dataset=FLAGS.dataset, protocol=FLAGS.protocol,
        batch_sizes=[int(b) for b in FLAGS.batch_sizes], seeds=[int(s) for s in FLAGS.seeds],
        examples_seen=FLAGS.examples_seen, train_steps=FLAGS.train_steps,
        base_lr=FLAGS.base_lr, lr_scaling=FLAGS.lr_scaling,
        max_micro_batch=FLAGS.max_micro_batch, eval_batch=FLAGS.eval_batch,
        eval_examples=FLAGS.eval_examples, train_grids=FLAGS.train_grids,
        heldout_grids=FLAGS.heldout_grids, retrieval_pairs=FLAGS.retrieval_pairs)
    json_path = scaling_plot.results_path(FLAGS.output_dir, FLAGS.dataset, FLAGS.protocol)

    def on_run(partial):
        scaling_study.save(partial, json_path)
        scaling_plot.update(FLAGS.output_dir, FLAGS.dataset)

    done = scaling_study.load_done(json_path, settings)
    if done:
        logging.info("resuming: %d finished runs in %s", len(done), json_path)
    with tempfile.TemporaryDirectory() as workdir:
        scaling_study.run_study(settings, workdir, log=logging.info, on_run=on_run, done=done)
    print(scaling_plot.table(scaling_plot.load_protocols(FLAGS.output_dir, FLAGS.dataset)))
    print(f"wrote {json_path} and {scaling_plot.figure_path(FLAGS.output_dir, FLAGS.dataset)}")


if __name__ == "__main__":
    cli.run(main)

"""Contrastive batch-size scaling study on Fashion-MNIST: zero-shot accuracy and generalisation
gap against batch size, with several seeds (JSON + PNG). Not part of `python -m benchmarks`.

  python3 tools/scaling_study.py                       # demo config, batches 16..1024, 3 seeds
  python3 tools/scaling_study.py --gin_file=tiny --batch_sizes=16,256 --seeds=0 \
      --examples_seen=4096 --output_dir=/tmp/study     # a quick smoke run

Every run sees --examples_seen examples (larger batches take fewer steps); batches above
--max_micro_batch use BASIC's exact accumulation. The design and its caveats are in
benchmarks/scaling_study.py; results go to <output_dir>/scaling_study.{json,png}.
Needs the Debian package dataset-fashion-mnist (tools/install.sh installs it).
"""
import os
import tempfile

from absl import flags, logging

from basic_tf import cli
from benchmarks import scaling_study

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", ["demo"], "Gin file(s) of the model to train.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_list("batch_sizes", [str(b) for b in scaling_study.BATCH_SIZES],
                  "Contrastive batch sizes.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one run per batch size and seed.")
flags.DEFINE_integer("examples_seen", 60_000, "Training examples per run (all batch sizes).")
flags.DEFINE_float("base_lr", 1e-3, "AdamW learning rate at batch 256 (sqrt scaling).")
flags.DEFINE_integer("max_micro_batch", 256, "Larger batches are accumulated in micro-batches "
                     "of this size (exact contrastive accumulation).")
flags.DEFINE_integer("eval_batch", 256, "Batch size of the train/test contrastive-loss gap.")
flags.DEFINE_string("output_dir", os.path.join("benchmarks", "results"),
                    "Where scaling_study.json and scaling_study.png go.")


def main(argv):
    del argv
    settings = scaling_study.StudySettings(
        gin_files=FLAGS.gin_file, gin_bindings=FLAGS.gin_bindings,
        batch_sizes=[int(b) for b in FLAGS.batch_sizes], seeds=[int(s) for s in FLAGS.seeds],
        examples_seen=FLAGS.examples_seen, base_lr=FLAGS.base_lr,
        max_micro_batch=FLAGS.max_micro_batch, eval_batch=FLAGS.eval_batch)
    json_path = os.path.join(FLAGS.output_dir, "scaling_study.json")
    png_path = os.path.join(FLAGS.output_dir, "scaling_study.png")
    with tempfile.TemporaryDirectory() as workdir:
        results = scaling_study.run_study(
            settings, workdir, log=logging.info,
            on_run=lambda partial: scaling_study.save(partial, json_path, png_path))
    for row in results["summary"]:
        print(f"batch {row['batch']:5d}: zero-shot {row['zero_shot_test']:.3f} +- "
              f"{row['zero_shot_test_std']:.3f}, accuracy gap {row['accuracy_gap']:+.3f}, "
              f"loss gap {row['loss_gap']:+.3f}")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    cli.run(main)

"""Plans a BASIC training run: parameters, FLOPs and per-device memory, and what to change.

  python3 tools/plan.py --gin_file=basic_l --global_batch=65536 --replicas=2048 \
      --device_memory_gb=16
  python3 tools/plan.py --gin_file=tiny --global_batch=1024 --mesh=batch:4,model:2

Reports, for the gin config as written (its train.num_micro_batches, train.remat and
train.mesh), the
parameter count and forward FLOPs of each tower, and memory per device:
weights, optimizer state, gradients, activations of one micro-batch (with or without recompute),
embeddings and the N x N logits (or N x C blocks with train.loss_chunk = C). Then it recommends
the number of micro-batches, the loss chunk (0 when the whole logits fit), the remat policy and
the data x model mesh that fit the device memory at the least compute. All numbers
are analytic (basic_tf/planner.py); benchmarks/planner_memory.py checks them against measurement.
"""
from absl import app, flags

from basic_tf import cli, planner

FLAGS = flags.FLAGS
cli.define_gin_flags(["tiny"], example="\"train.remat = 'every_block'\"")
flags.DEFINE_integer("global_batch", 1024, "Contrastive batch over all replicas.")
flags.DEFINE_integer("replicas", 1, "Data-parallel replicas (ignored with a mesh: --mesh or "
                     "the gin file's train.mesh).")
flags.DEFINE_string("mesh", "", "Device mesh 'batch:D,model:M' (D data replicas x M model "
                    "shards; tools/train.py's --mesh syntax); empty: the gin file's train.mesh, "
                    "else --replicas x 1.")
flags.DEFINE_float("device_memory_gb", 16.0, "Memory of one device, GiB.")
flags.DEFINE_float("peak_tflops", 0.0, "Peak bfloat16 TFLOP/s of one device (e.g. 275 for a TPU "
                   "v4 chip, 197 for v5e): adds a step-time estimate at --assumed_mfu; 0: none.")
flags.DEFINE_float("assumed_mfu", 0.4, "Fraction of --peak_tflops the step is assumed to reach "
                   "(an assumption, not a measurement), in (0, 1].")
flags.DEFINE_enum("optimizer", "adamw", sorted(planner.OPTIMIZER_SLOTS), "Optimizer (state size).")
flags.DEFINE_enum("activation_dtype", "float32", ["float32", "bfloat16"],
                  "Compute dtype of activations.")


def main(argv):
    del argv
    if FLAGS.peak_tflops < 0 or not 0 < FLAGS.assumed_mfu <= 1:
        raise app.UsageError(f"--peak_tflops={FLAGS.peak_tflops:g} must be >= 0 and "
                             f"--assumed_mfu={FLAGS.assumed_mfu:g} in (0, 1]")
    from basic_tf import from_gin
    cli.parse_gin_flags()
    train = from_gin.train_config()
    data, model = planner.parse_mesh(FLAGS.mesh or train.mesh or "", FLAGS.replicas)
    print(planner.report(from_gin.model_configs(), train, FLAGS.global_batch, data, model,
                         FLAGS.device_memory_gb, FLAGS.peak_tflops, FLAGS.assumed_mfu,
                         optimizer=FLAGS.optimizer,
                         activation_bytes=4 if FLAGS.activation_dtype == "float32" else 2))


if __name__ == "__main__":
    cli.run(main)

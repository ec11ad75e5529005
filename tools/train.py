r"""Trains basic_tf: stage (a) image-tower pre-training or stage (b) contrastive training.

  python3 tools/train.py --gin_file=tiny --model_dir=/tmp/tiny \
      --gin_bindings="make_dataset.file_pattern='/data/train-*.tfrecord'" \
      --gin_bindings="make_dataset.tokenizer_path='/data/sp.model'" \
      --gin_bindings="make_dataset.global_batch_size=64" --gin_bindings="train.train_steps=1000"
  python3 tools/train.py --gin_file=tiny --model_dir=/tmp/tiny --strategy=mirrored:4 \
      --virtual_cpu_devices=4 ...      # try data parallelism on one CPU
  python3 tools/train.py --gin_file=basic_s --model_dir=gs://bucket/run --strategy=tpu --tpu=name
  TF_CONFIG='{"cluster": {"worker": ["host-a:12345", "host-b:12345"]}, "task": {"type": "worker",
  "index": 0}}' python3 tools/train.py --gin_file=basic_s --model_dir=gs://bucket/run \
      --strategy=multi_worker_mirrored   # the same on host-b with "index": 1
  python3 tools/train.py --gin_file=tiny --model_dir=/tmp/tiny --mesh=batch:2,model:4 \
      --virtual_cpu_devices=8 ...      # model parallelism: weights sharded on a DTensor mesh

--mesh=batch:B,model:M (or the binding train.mesh='batch:B,model:M') trains on a DTensor mesh of
exactly all local devices (B x M; on CPU set --virtual_cpu_devices=B*M): examples split over
"batch", weights and optimizer slots split over "model" by the layout rules of
basic_tf/parallel/dtensor/layouts.py. It is the same trainer (basic_tf/training/mesh_placement.py):
evaluation, stage (a), LiT, mixed precision, the skipped-step guard and exact resume (the input
position is saved in model_dir/host/) work as without it. With the default --strategy only. Its
checkpoints load into an unsharded model (tools/export.py --checkpoint=<model_dir>).

Stage (a) then (b), LiT: `train.stage='pretrain'` and `image_classifier_config.num_classes=N` into
model_dir A; then `train.init_image_tower_from='A'` (and `train.lock_image_tower=True`) into B.

Running the same command again on a model_dir that holds a checkpoint resumes it exactly (a
changed learning rate or schedule is honoured and logged; another batch size or model shape is
refused). Writes model_dir/ckpt-<step> (at multiples of train.checkpoint_interval and the end,
only from good states), model_dir/train and model_dir/eval (TensorBoard) and
model_dir/operative_config.gin; with several workers only the chief does, the others write their
input positions to model_dir/input_position/ (README "Several hosts and TPU pods"). Every option
is a gin binding: train.* (basic_tf/training/train_config.py, checked before anything heavy),
the models' configs, make_optimizer, learning_rate_schedule and make_dataset.

Exit status: 0 done; 1 stopped for too many skipped (non-finite) steps, the message names the
newest good checkpoint; 2 a bad flag, gin file, binding or model_dir, named on the first line;
143 SIGTERM (preemption): a checkpoint was saved at the step it arrived, rerun to resume.
"""
from absl import app, flags, logging

from basic_tf import cli

FLAGS = flags.FLAGS
cli.define_gin_flags()
cli.define_strategy_flags()
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and the operative gin config; "
                    "an existing checkpoint here is resumed.")
flags.DEFINE_string("mesh", None, "Model parallelism: a DTensor mesh 'batch:B,model:M' of all "
                    "local devices (same as the binding train.mesh); default --strategy only.")
flags.DEFINE_integer("virtual_cpu_devices", None, "Split the host CPU into N logical devices "
                     "before TensorFlow starts (multi-device runs without accelerators).")
flags.mark_flag_as_required("model_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.gin_file:
        raise app.UsageError("give at least one --gin_file (e.g. --gin_file=tiny)")
    import tensorflow as tf
    if FLAGS.virtual_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        devices = [tf.config.LogicalDeviceConfiguration()
                   for _ in range(FLAGS.virtual_cpu_devices)]
        tf.config.set_logical_device_configuration(cpu, devices)
    from basic_tf import from_gin
    from basic_tf.data.skips import input_error_message
    from basic_tf.training import preemption
    from basic_tf.training.checkpoints import CheckpointWriteError
    from basic_tf.training.placement import mesh_with_strategy_error
    from basic_tf.training.trainer import NonFiniteLossError

    if FLAGS.mesh and FLAGS.strategy != "default":  # before building the strategy it names
        raise app.UsageError(str(mesh_with_strategy_error(FLAGS.mesh,
                                                          f"--strategy={FLAGS.strategy}")))
    try:
        cli.parse_gin_flags()
        result = from_gin.train(FLAGS.model_dir, cli.strategy_from_flags(),
                                **({"mesh": FLAGS.mesh} if FLAGS.mesh else {}))
    except NonFiniteLossError as e:
        logging.error("%s", e)
        raise SystemExit(1) from None
    except (ValueError, FileNotFoundError, CheckpointWriteError) as e:
        if FLAGS.verbosity >= 1:  # --verbosity=1: the full traceback
            raise
        logging.error("%s", str(e).strip())
        raise SystemExit(2) from None
    except RuntimeError as e:  # gin: a required binding (e.g. make_dataset.file_pattern) unset
        if "Required bindings" not in str(e) or FLAGS.verbosity >= 1:
            raise
        logging.error("%s (set them in the gin file or with --gin_bindings)",
                      str(e).strip().splitlines()[0])
        raise SystemExit(2) from None
    except tf.errors.InvalidArgumentError as e:  # the input pipeline stopped: say why, first
        message = input_error_message(e)
        if message is None:
            raise
        logging.error("%s", message)
        raise SystemExit(1) from None
    if result["preempted"]:
        raise SystemExit(preemption.EXIT_CODE)
    logging.info("done at step %d; model_dir %s", result["step"], FLAGS.model_dir)


if __name__ == "__main__":
    cli.run(main)

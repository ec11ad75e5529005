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

--dry_run (before paying for a slice): builds the model, the input and the optimizer, compiles the
step with XLA (one replica, or a TPU), runs one step and prints the planner's per-device memory
against the device's (basic_tf/training/dry_run.py); writes nothing into model_dir. An
unreachable --strategy=tpu fails within seconds naming what to check (basic_tf/parallel/tpu.py).

Stage (a) then (b), LiT: `train.stage='pretrain'` and `image_classifier_config.num_classes=N` into
model_dir A; then `train.init_image_tower_from='A'` (and `train.lock_image_tower=True`) into B.
A checkpoint that is no verified state of run A (under A/unverified/, or past the newest one A's
index lists) is refused unless --allow_unverified.

Running the same command again on a model_dir that holds a checkpoint resumes it exactly (a
changed learning rate or schedule is honoured and logged; another batch size or model shape is
refused). Writes model_dir/ckpt-<step> (at multiples of train.checkpoint_interval and the end,
only from good states), model_dir/train and model_dir/eval (TensorBoard) and
model_dir/operative_config.gin; with several workers only the chief does, the others write their
input positions to model_dir/input_position/ (README "Several hosts and TPU pods"). Every option
is a gin binding: train.* (basic_tf/training/train_config.py, checked before anything heavy),
the models' configs, make_optimizer, learning_rate_schedule and make_dataset.

Several workers (--strategy=multi_worker_mirrored): every worker of TF_CONFIG must start and
answer within --worker_start_timeout seconds (default 600), and all must be given the same gin
config (compared at start, the bindings that differ named); a taken port is named before
TensorFlow listens.

Exit status: 0 done; 1 stopped for too many skipped (non-finite) steps, the message names the
newest good checkpoint; 2 a bad flag, gin file, binding or model_dir (also: a model_dir in use by
another training, workers of different configs, a taken port), named on the first line; 137 the
workers did not all start within --worker_start_timeout (the line before names them);
143 SIGTERM (preemption) or 130 SIGINT (Ctrl-C): a checkpoint was saved at the step it arrived,
rerun to resume (a Ctrl-C before training starts, or a second one, exits 130 without saving).
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
flags.DEFINE_bool("allow_unverified", False, "Initialise from train.init_image_tower_from even "
                  "when it names an unverified checkpoint (under a run's unverified/, or past "
                  "the newest one its index lists); same as the binding train.allow_unverified.")
flags.DEFINE_integer("virtual_cpu_devices", None, "Split the host CPU into N logical devices "
                     "before TensorFlow starts (multi-device runs without accelerators).")
flags.DEFINE_integer("worker_start_timeout", 600, "--strategy=multi_worker_mirrored: seconds "
                     "for every worker of TF_CONFIG to start and answer; then this worker is "
                     "ended (exit 137) naming those that do not (0: wait forever).")
flags.DEFINE_bool("dry_run", False, "Build model, input and optimizer, compile the step with "
                  "XLA, run one step, print the planner's per-device memory against the "
                  "device's; then exit, writing nothing (no checkpoint).")
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
    from basic_tf import config, from_gin
    from basic_tf.data.skips import input_error_message
    from basic_tf.training import preemption
    from basic_tf.training.checkpoints import CheckpointWriteError
    from basic_tf.training.placement import mesh_with_strategy_error
    from basic_tf.training import worker_start
    from basic_tf.training.trainer import SkippedStepsError

    if FLAGS.mesh and FLAGS.strategy != "default":  # before building the strategy it names
        raise app.UsageError(str(mesh_with_strategy_error(FLAGS.mesh,
                                                          f"--strategy={FLAGS.strategy}")))
    try:
        cli.parse_gin_flags()
        if FLAGS.strategy == "multi_worker_mirrored":
            worker_start.check_own_port()
        # Several workers: they start within --worker_start_timeout and have the same config.
        with worker_start.StartDeadline(FLAGS.worker_start_timeout):
            strategy = cli.strategy_from_flags()
            worker_start.check_same_config(strategy, config.config_str())
        overrides = {"mesh": FLAGS.mesh} if FLAGS.mesh else {}
        if FLAGS.allow_unverified:
            overrides["allow_unverified"] = True
        if FLAGS.dry_run:
            print(from_gin.dry_run(strategy, **overrides)["report"], flush=True)
            return
        result = from_gin.train(FLAGS.model_dir, strategy, **overrides)
    except SkippedStepsError as e:
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
    except KeyboardInterrupt:   # Ctrl-C outside the loop of steps (building, tracing), or twice
        logging.error("interrupted (SIGINT) before a checkpoint could be saved; rerun to resume "
                      "from the last one")
        raise SystemExit(preemption.EXIT_CODES["SIGINT"]) from None
    except tf.errors.InvalidArgumentError as e:  # the input pipeline stopped: say why, first
        message = input_error_message(e)
        if message is None:
            raise
        logging.error("%s", message)
        raise SystemExit(1) from None
    if result["preempted"]:
        raise SystemExit(preemption.EXIT_CODES[result["stop_signal"]])
    logging.info("done at step %d; model_dir %s", result["step"], FLAGS.model_dir)


if __name__ == "__main__":
    cli.run(main)

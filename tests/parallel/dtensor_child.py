"""Child process of test_dtensor_coverage.py: for each case (a gin config and bindings), N
training steps on one device, then the same N steps on each of the case's DTensor meshes; prints
one JSON line per result as soon as it is known, so a crash still leaves the earlier ones.

    python dtensor_child.py '{"devices": 4, "cases": [{"name": "tiny", "gin": ["models/tiny"],
                              "bindings": [], "meshes": [[2, 2]], "steps": 5}]}'

Lines: {"case": name, "reference": {...}} then {"case": name, "mesh": "2x2", ...} with either
the comparison below or "error" (the exception's type and message).

The step is the Trainer's own, step.TrainStep (ContrastiveTask.replica_step -> BASIC
accumulation -> contrastive loss, apply_update with global-norm clipping, the BatchNorm
roll-back, TrainState's counters), placed by the training room's Placement (its optimizer,
counters and trace context); the sharded run differs only in the Placement's mesh and in
`shard_batch`. A subprocess because DTensor needs its virtual CPUs before TF starts and
a failed DTensor compilation can take the process down.

Comparison, per variable (trainable weights, BatchNorm statistics) after N steps:
  max |sharded - one device| <= rtol * max(max |one device|, N * learning_rate)
(the second term: a weight that starts at zero moves by at most about N * learning_rate under
AdamW / AdaFactorW, so that is its scale).
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if __name__ == "__main__":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()
         for _ in range(json.loads(sys.argv[1]).get("devices", 8))])
    # Grappler would optimise each per-device function separately: about half the compilation
    # time of a DTensor step, and nothing to gain for a few steps.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

import keras  # noqa: E402

from basic_tf import config  # noqa: E402
from basic_tf.parallel import dtensor as pd  # noqa: E402


def _emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def run_case(cfg: dict) -> None:
    from basic_tf import from_gin
    from basic_tf.training.contrastive import ContrastiveTask
    from basic_tf.training.placement import Placement
    from basic_tf.training.step import TrainState, TrainStep

    name = cfg["name"]
    config.parse(cfg.get("gin", ["models/tiny"]), cfg.get("bindings", []))
    # The step's settings as train() receives them (gin `train.*`), passed on as train does.
    train = from_gin.train_config()
    micro, remat = train.num_micro_batches, train.remat_policy
    batch, steps, rtol = cfg.get("batch", 16), cfg.get("steps", 5), cfg.get("rtol", 1e-5)
    keras.utils.set_random_seed(0)
    init = from_gin.dual_encoder().get_weights()
    probe = from_gin.dual_encoder()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, probe.image_size, probe.image_size, 3)).astype(np.float32)
    vocab = probe.text_tower.config.vocab_size
    tokens = rng.integers(3, vocab, size=(batch, probe.max_text_len)).astype(np.int32)
    tokens[:, probe.max_text_len // 2:] = 0  # padding, and some short captions
    tokens[::3, 3:] = 0

    def run(mesh_shape):
        start = time.process_time()
        model = from_gin.dual_encoder(remat_policy=remat)
        model.set_weights(init)
        mesh = None if mesh_shape is None else pd.make_mesh(*mesh_shape, device_type="CPU")
        placement = Placement(mesh=mesh)
        task = ContrastiveTask(model, num_micro_batches=micro)
        optimizer = placement.place_task(task)
        with placement.counters_scope():
            state = TrainState()
        step = TrainStep(placement, task, optimizer, state, clip_norm=train.clip_norm,
                         loss_spike_factor=train.loss_spike_factor,
                         loss_spike_window=train.loss_spike_window, seed=train.seed)
        if mesh is None:
            batch_in = {"images": tf.constant(images), "token_ids": tf.constant(tokens)}
        else:
            batch_in = {"images": pd.shard_batch(images, mesh),
                        "token_ids": pd.shard_batch(tokens, mesh)}

        # The Trainer's step (its seed from the checkpointed step counter: DTensor compiles a
        # function again when a small integer argument changes value).
        @tf.function(autograph=False)
        def one_step(batch_in):
            return step(batch_in)[0].loss

        losses, first_step = [], None
        with placement.trace_context():
            for _ in range(steps):
                losses.append(float(pd.to_numpy(one_step(batch_in))))
                first_step = first_step or time.process_time() - start
        learning_rate = float(pd.to_numpy(optimizer.learning_rate))
        weights = {v.path: pd.to_numpy(v) for v in model.variables}
        return losses, weights, learning_rate, {"first_step_cpu_s": first_step,
                                                "total_cpu_s": time.process_time() - start}

    ref_losses, ref_weights, learning_rate, ref_cost = run(None)
    _emit({"case": name, "reference": {"losses": ref_losses, "num_micro_batches": micro,
                                       "remat": str(remat), **ref_cost}})
    floor = steps * learning_rate
    for shape in cfg["meshes"]:
        key = "x".join(map(str, shape))
        try:
            losses, weights, _, cost = run(tuple(shape))
        except Exception as e:  # a DTensor compile error: report it, go on with other meshes
            _emit({"case": name, "mesh": key, "error": f"{type(e).__name__}: {str(e)[:6000]}"})
            continue
        loss_rel = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        worst, failing = 0.0, []
        for path, expected in ref_weights.items():
            scale = max(float(np.abs(expected).max()), floor)
            rel = float(np.abs(weights[path] - expected).max()) / scale
            worst = max(worst, rel)
            if rel > rtol:
                failing.append([path, rel])
        _emit({"case": name, "mesh": key, "losses": losses, "loss_rel": loss_rel,
               "weight_rel": worst, "failing": failing, "num_variables": len(ref_weights),
               **cost})


if __name__ == "__main__":
    for case in json.loads(sys.argv[1])["cases"]:
        run_case(case)

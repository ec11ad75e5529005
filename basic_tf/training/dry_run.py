"""`dry_run(config, placement, ...)`: what tools/train.py --dry_run does before a slice is paid
for: build the model, the input and the optimizer as training does, compile the step with XLA
(train.jit_compile; on TPU strategy.run compiles it anyway), run one step, and compare the
planner's per-device memory (basic_tf/planner.py) with the device's memory. Nothing is written:
no checkpoint, no summary, no model_dir.
"""
import dataclasses
import os
import time
from typing import Callable, Optional

import tensorflow as tf

from basic_tf import planner
from basic_tf.models import ModelConfigs
from basic_tf.training import precision
from basic_tf.training.step import TrainState
from basic_tf.training.train_config import TrainConfig
from basic_tf.training.trainer import Trainer


def _xla_possible(placement) -> bool:
    """Whether the step can be XLA-compiled whole here (step.TrainStep: one replica, or TPU)."""
    return placement.mesh is None and (
        placement.num_replicas == 1 or isinstance(placement.strategy, tf.distribute.TPUStrategy))


def device_memory() -> tuple:
    """(bytes of one device's memory or None, where the figure comes from). CPU: the host's
    physical memory; an accelerator: what TensorFlow reports as its limit, when it does."""
    for kind in ("TPU", "GPU"):
        devices = tf.config.list_logical_devices(kind)
        if devices:
            try:
                limit = tf.config.experimental.get_memory_info(devices[0].name).get("limit")
            except (ValueError, tf.errors.OpError):
                limit = None
            return limit, f"{devices[0].name} (TensorFlow's memory info)"
    return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "host RAM (CPU: all replicas share it)")


def dry_run(config: TrainConfig, placement, *, models: ModelConfigs,
            dataset_fn: Callable, optimizer_kind: Optional[str] = None) -> dict:
    """One compiled training step of `config` on `placement`, nothing written -> a record:
    jit_compile (whether the step was XLA-compiled), compile_seconds (trace + compile + the
    first step), loss, global_batch_size, plan (planner.Plan of the step per device),
    device_memory_bytes (None: unknown), device_memory_source, report (the text to print).

    optimizer_kind: make_optimizer.kind, for the planner's optimizer-state size (adafactorw
    counted with its momentum, make_optimizer's default beta_1)."""
    from basic_tf.training.loop import _build_task
    config.check_trainable()
    jit = _xla_possible(placement)
    config = dataclasses.replace(config, jit_compile=jit)
    with placement.model_scope(), precision.dtype_policy(config.mixed_precision):
        task = _build_task(config, models, model_dir="")
    optimizer = placement.place_task(task)
    with placement.counters_scope():
        state = TrainState()
    iterator = placement.input(dataset_fn)
    global_batch = int(iterator.element_spec["images"].shape[0]) * placement.num_replicas
    trainer = Trainer(placement, task, optimizer, iterator, state,
                      global_batch_size=global_batch, clip_norm=config.clip_norm,
                      max_consecutive_nonfinite=config.max_consecutive_nonfinite,
                      loss_spike_factor=config.loss_spike_factor,
                      loss_spike_window=config.loss_spike_window, seed=config.seed,
                      use_tf_while_loop=config.use_tf_while_loop,
                      jit_compile=config.jit_compile)
    start = time.perf_counter()
    output = trainer.train(tf.constant(1, tf.int32))
    seconds = time.perf_counter() - start
    data, shards = planner.parse_mesh(config.mesh or "", placement.num_replicas)
    kind = {"adafactorw": "adafactor_momentum"}.get(optimizer_kind, optimizer_kind) or "adamw"
    plan = planner.plan_step(
        models, global_batch, data_replicas=data, model_shards=shards,
        num_micro_batches=config.num_micro_batches, remat_every=config.remat_every,
        loss_chunk=config.loss_chunk, optimizer=kind,
        activation_bytes=2 if config.mixed_precision == "mixed_bfloat16" else 4)
    memory, source = device_memory()
    if memory:
        verdict = (f"{plan.peak_bytes / planner.MB:,.1f} MB of {memory / planner.MB:,.1f} MB "
                   f"({100 * plan.peak_bytes / memory:.1f}%: "
                   f"{'fits' if plan.peak_bytes <= memory else 'does NOT fit'})")
    else:
        verdict = f"{plan.peak_bytes / planner.MB:,.1f} MB (the device's memory is unknown)"
    loss = float(output["loss"])
    report = "\n".join([
        f"dry run: {type(placement.strategy).__name__}, {placement.num_replicas} replica(s), "
        f"global batch {global_batch}; step "
        f"{'XLA-compiled' if jit else 'compiled without XLA (XLA compiles one replica or TPU)'}; "
        f"trace + compile + one step {seconds:.1f} s; loss {loss:.4f}",
        planner.format_plan(plan),
        f"device memory ({source}): planner's peak {verdict}",
        "nothing written (no checkpoint, no summary)"])
    return {"jit_compile": jit, "compile_seconds": seconds, "loss": loss,
            "global_batch_size": global_batch, "plan": plan, "device_memory_bytes": memory,
            "device_memory_source": source, "report": report}

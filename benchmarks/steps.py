"""The train step the benchmark figures time, built the same way for every figure (child side).

One step = `contrastive_gradients` (BASIC's exact accumulation over M micro-batches; M = 1 is one
taped pass) + Keras 3 AdamW `apply_gradients`, in one `tf.function`, on a fixed random batch
(no input pipeline). TensorFlow is imported inside the functions, so parents can read ADAMW.
"""
import time

import numpy as np

ADAMW = {"learning_rate": 1e-3, "weight_decay": 0.1, "epsilon": 1e-7}


def build(gin_files, bindings, batch: int, remat: str = None):
    """(model, images, token_ids) from gin, the model built, on random inputs."""
    import tensorflow as tf
    from basic_tf import config
    config.parse(gin_files, bindings)
    from basic_tf import from_gin
    from basic_tf.parallel.remat import RematPolicy
    model = from_gin.dual_encoder(None if remat is None else RematPolicy(mode=remat))
    rng = np.random.default_rng(0)
    size, seq = model.image_size, model.max_text_len
    vocab = model.text_tower.config.vocab_size
    images = tf.constant(rng.uniform(size=(batch, size, size, 3)).astype(np.float32))
    tokens = tf.constant(rng.integers(1, vocab, size=(batch, seq)), tf.int32)
    model({"images": images[:2], "token_ids": tokens[:2]})
    return model, images, tokens


def param_count(model) -> int:
    """Every weight, BatchNorm moving statistics included (as basic_tf.models.param_count)."""
    return int(model.count_params())


def train_step(model, num_micro_batches: int = 1, xla: bool = False, optimizer=True):
    """A tf.function(images, token_ids, seed) -> loss; the AdamW is built before tracing."""
    import keras
    import tensorflow as tf
    from basic_tf.training import contrastive_gradients
    opt = None
    if optimizer:
        opt = keras.optimizers.AdamW(**ADAMW)
        opt.build(model.trainable_variables)

    def step(images, tokens, seed):
        loss, grads = contrastive_gradients(model, images, tokens, num_micro_batches, seed=seed)
        if opt is not None:
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return loss + 0.0 * tf.linalg.global_norm(grads)

    return tf.function(step, jit_compile=xla)


def time_step(step, images, tokens, warmup: int, steps: int) -> dict:
    """First call (trace + run) time, then the median of `steps` calls after `warmup` calls."""
    import tensorflow as tf
    start = time.perf_counter()
    float(step(images, tokens, tf.constant([0, 0])))
    first = time.perf_counter() - start
    for i in range(warmup):
        float(step(images, tokens, tf.constant([i + 1, 0])))
    times = []
    for i in range(steps):
        start = time.perf_counter()
        loss = float(step(images, tokens, tf.constant([i + 100, 0])))
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"first_step_s": round(first, 3), "step_s": round(step_s, 4),
            "pairs_per_s": round(int(images.shape[0]) / step_s, 1), "loss": loss}


def measure_step_memory(cfg: dict) -> dict:
    """Child side of the memory figures: peak memory and step time of one train step setting.

    cfg: gin (list of gin files), bindings, batch, micro (M), remat (RematPolicy mode), steps
    (timed steps). Builds the model, AdamW and the input batch, then runs the step twice;
    measured = peak RSS increase over the RSS just before the first step (tracing included),
    i.e. what the step adds on top of weights, optimizer state and inputs. The planner's
    prediction of the same quantity (`Plan.step_bytes`, from the parsed gin config) is returned
    beside it. Then malloc is switched to its steady state (common.steady_state_malloc) and
    `steps` more steps (none if 0) are timed after one warm-up: MEMORY_ENV's small mmap threshold would page-fault every large
    buffer and slow the big-batch steps most. `first_loss` is the loss of the first step (each
    process initialises its own random weights). Run it under
    common.MEMORY_ENV.
    """
    import tensorflow as tf
    from basic_tf import from_gin, planner
    from benchmarks import common

    model, images, tokens = build(cfg["gin"], cfg["bindings"], cfg["batch"], remat=cfg["remat"])
    step = train_step(model, cfg["micro"])
    plan = planner.plan_step(from_gin.model_configs(), cfg["batch"],
                             num_micro_batches=cfg["micro"],
                             remat_every=0 if cfg["remat"] == "none" else 1)
    before = common.rss_mb()
    start = time.perf_counter()
    first_loss = float(step(images, tokens, tf.constant([0, 0])))
    first = time.perf_counter() - start
    float(step(images, tokens, tf.constant([1, 0])))
    measured = common.peak_rss_mb() - before
    times = []
    if cfg["steps"]:
        common.steady_state_malloc()
        float(step(images, tokens, tf.constant([2, 0])))  # warm-up under the new settings
    for i in range(cfg["steps"]):
        start = time.perf_counter()
        float(step(images, tokens, tf.constant([i + 3, 0])))
        times.append(time.perf_counter() - start)
    predicted = plan.step_bytes / planner.MB
    return {"batch": cfg["batch"], "micro": cfg["micro"], "remat": cfg["remat"],
            "params": param_count(model), "planner_params": plan.params["total"],
            "measured_mb": round(measured, 1), "predicted_mb": round(predicted, 1),
            "error": round(predicted / measured - 1.0, 3),
            "predicted_components_mb": {k: round(v / planner.MB, 2)
                                        for k, v in plan.memory.items()},
            "first_step_s": round(first, 2),
            "step_s": round(float(np.median(times)), 4) if times else None,
            "first_loss": first_loss}

"""Contrastive batch-size scaling study (run by tools/scaling_study.py).

BASIC (Pham et al., Sec. 3 and 6) claims that a larger contrastive batch gives better zero-shot
accuracy and a smaller generalisation gap. Here the gin config's dual encoder (the demo config)
is trained from scratch at each contrastive batch size, for several seeds, under one of two
protocols:
- 'examples': every run sees the same number of examples (batch B takes examples_seen / B steps);
- 'steps': every run takes the same number of optimizer steps (batch B sees steps * B examples).
Batches above `max_micro_batch` use BASIC's exact accumulation (micro-batches of that size).
The learning rate rule is the same for every batch: AdamW at `base_lr` (lr_scaling='none', as
SigLIP kept one rate from batch 512 to 1M; or base_lr * sqrt(B / 256) with 'sqrt', the first
study's rule), linear warm-up over 10% of the steps, cosine decay to 0.

Datasets (benchmarks/scaling_data.py): 'grid' (four garments per 56x56 image, captions naming
them in position, 10^4 contents) and 'fashion_mnist' (single garments, 10 contents: the first
study). Metrics after each run, all on data the run never trained on unless named 'train':
- zero-shot top-1 on the Fashion-MNIST test garments (and on training garments: the accuracy
  gap), prompts never used as training captions;
- image->text and text->image R@1/R@5 among the held-out retrieval pairs (grid only; ground
  truth by caption identity, basic_tf/zeroshot/retrieval.recall_at_k);
- the generalisation gap the paper's theory is about: held-out minus training contrastive loss,
  both at one fixed evaluation batch size.
"""
import dataclasses
import json
import math
import os
import time
from typing import Optional, Sequence

import numpy as np

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
PROTOCOLS = ("examples", "steps")
METRICS = ("zero_shot_test", "zero_shot_train", "accuracy_gap", "loss_gap", "eval_loss_test",
           "eval_loss_train", "final_train_loss", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5",
           "seconds")


@dataclasses.dataclass
class StudySettings:
    gin_files: Sequence[str] = ("demo",)
    gin_bindings: Sequence[str] = ()
    dataset: str = "grid"
    protocol: str = "examples"
    batch_sizes: Sequence[int] = BATCH_SIZES
    seeds: Sequence[int] = (0, 1, 2)
    examples_seen: int = 32_000      # protocol 'examples'
    train_steps: int = 100           # protocol 'steps'
    base_lr: float = 2e-3
    lr_scaling: str = "none"         # 'none': one rate for all batches; 'sqrt': * sqrt(B/256)
    weight_decay: float = 0.1
    max_micro_batch: int = 256
    eval_batch: int = 256
    eval_examples: int = 10_000
    train_grids: int = 40_000
    heldout_grids: int = 2_500
    retrieval_pairs: int = 1_000

    def steps_for(self, batch: int) -> int:
        if self.protocol == "steps":
            return self.train_steps
        return max(1, self.examples_seen // batch)

    def peak_lr(self, batch: int) -> float:
        return self.base_lr * (math.sqrt(batch / 256.0) if self.lr_scaling == "sqrt" else 1.0)

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}: expected one of {PROTOCOLS}")
        if self.lr_scaling not in ("none", "sqrt"):
            raise ValueError(f"lr_scaling={self.lr_scaling!r}: expected 'none' or 'sqrt'")
        bad = [b for b in self.batch_sizes
               if b > self.max_micro_batch and b % self.max_micro_batch]
        if bad:
            raise ValueError(f"batch sizes {bad} are not multiples of max_micro_batch="
                             f"{self.max_micro_batch} (accumulation splits them evenly)")


def learning_rate(base: float, step: int, steps: int) -> float:
    """Linear warm-up over the first 10% of the steps, then cosine decay to 0."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class StudyTrainer:
    """One model, optimizer and set of traced functions for every run of the study: each run
    re-initialises the weights (a freshly built model's, from the run's seed) and zeroes the
    optimizer state, so no run pays for tracing again (a trace costs tens of seconds here).
    Every traced function takes images as uint8 [b, h, w] (gray) and makes them float32
    [b, S, S, 3] in [0, 1] at the model's image size S."""

    def __init__(self, settings: StudySettings, example_images, example_tokens):
        import keras
        import tensorflow as tf
        from basic_tf import config, from_gin, losses

        self.settings = settings
        config.parse(list(settings.gin_files), list(settings.gin_bindings))
        self.model = from_gin.dual_encoder()
        size = self.model.image_size

        def to_model(x):
            x = tf.image.grayscale_to_rgb(tf.cast(x, tf.float32)[..., None] / 255.0)
            return x if x.shape[1] == size else tf.image.resize(x, [size, size])

        self.to_model = to_model
        self.inputs = {"images": to_model(example_images[:2]), "token_ids": example_tokens[:2]}
        self.model(self.inputs)
        self.optimizer = keras.optimizers.AdamW(learning_rate=settings.base_lr,
                                                weight_decay=settings.weight_decay)
        self.optimizer.build(self.model.trainable_variables)
        self.encode_image = tf.function(lambda x: self.model.encode_image(to_model(x)))
        self.encode_text = tf.function(lambda t: self.model.encode_text(t))
        self.contrastive_loss = tf.function(lambda x, t: losses.contrastive_loss(
            self.model.encode_image(to_model(x)), self.model.encode_text(t),
            self.model.logit_scale, logit_bias=self.model.logit_bias))
        self._steps = {}

    def reset(self, seed: int) -> None:
        """Weights of a fresh model built with `seed`; zero optimizer state and step count.
        Keras initializers without a seed draw theirs from Python's `random`, so seeding it
        is enough (keras.utils.set_random_seed would also clear TF's eager kernel cache, which
        costs a re-optimisation of every traced function)."""
        import random

        from basic_tf import from_gin

        random.seed(seed)
        fresh = from_gin.dual_encoder()
        fresh(self.inputs)
        self.model.set_weights(fresh.get_weights())
        for v in self.optimizer.variables:
            if v is not self.optimizer._learning_rate:
                v.assign(np.zeros(v.shape, v.dtype))

    def step_fn(self, micro: int):
        import tensorflow as tf
        from basic_tf.training import contrastive_gradients

        if micro not in self._steps:
            model, optimizer, to_model = self.model, self.optimizer, self.to_model

            @tf.function
            def step(x, t, s):
                loss, grads = contrastive_gradients(model, to_model(x), t, micro, seed=s)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            self._steps[micro] = step
        return self._steps[micro]

    def train(self, data, batch: int, seed: int):
        """Trains from a fresh initialisation at one batch size: (seconds, steps, final loss).
        Batches are drawn without replacement (a new permutation per pass over the data); each
        example's caption is one of its set's phrasings, drawn afresh at every step."""
        import tensorflow as tf

        self.reset(seed)
        s = self.settings
        images, caption_of, tokens = data.train_images, data.train_caption_of, data.caption_tokens
        steps = s.steps_for(batch)
        step = self.step_fn(max(1, batch // s.max_micro_batch))
        base = s.peak_lr(batch)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        position, losses, start = 0, [], time.time()
        for i in range(steps):
            if position + batch > len(order):
                order, position = rng.permutation(len(images)), 0
            idx = order[position:position + batch]
            position += batch
            phrasing = rng.integers(0, tokens.shape[1], size=batch)
            self.optimizer.learning_rate = learning_rate(base, i, steps)
            losses.append(float(step(images[idx], tokens[caption_of[idx], phrasing],
                                     tf.constant([seed, i], tf.int32))))
        return time.time() - start, steps, float(np.mean(losses[-max(1, steps // 10):]))


def embed(fn, inputs: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate([fn(inputs[b:b + batch]).numpy() for b in range(0, len(inputs), batch)])


def contrastive_loss_at(loss_fn, images, caption_of, tokens, batch: int, seed: int,
                        batches: int = 8) -> float:
    """Mean of loss_fn(images, token_ids) over `batches` random batches of a fixed size (the
    same draws for every run of a seed)."""
    rng = np.random.default_rng(1000 + seed)
    values = []
    for _ in range(batches):
        idx = rng.choice(len(images), batch, replace=False)
        phrasing = rng.integers(0, tokens.shape[1], size=batch)
        values.append(float(loss_fn(images[idx], tokens[caption_of[idx], phrasing])))
    return float(np.mean(values))


def evaluate(trainer: StudyTrainer, data, seed: int) -> dict:
    """Every metric of the module docstring for the trainer's current weights."""
    from basic_tf.zeroshot import build_zero_shot_classifier
    from basic_tf.zeroshot.retrieval import recall_at_k

    s = trainer.settings
    classifier = build_zero_shot_classifier(trainer.encode_text, data.tokenizer,
                                            data.class_names, data.zero_shot_templates)
    out = {}
    for split, (x, y) in data.zero_shot.items():
        out[f"zero_shot_{split}"] = float(np.mean(
            np.argmax(embed(trainer.encode_image, x) @ classifier, axis=1) == y))
    out["accuracy_gap"] = out["zero_shot_train"] - out["zero_shot_test"]
    out["eval_loss_train"] = contrastive_loss_at(trainer.contrastive_loss, data.train_images,
                                                 data.train_caption_of, data.caption_tokens,
                                                 s.eval_batch, seed)
    out["eval_loss_test"] = contrastive_loss_at(trainer.contrastive_loss, data.heldout_images,
                                                data.heldout_caption_of, data.caption_tokens,
                                                s.eval_batch, seed)
    out["loss_gap"] = out["eval_loss_test"] - out["eval_loss_train"]
    if data.retrieval is not None:
        r = data.retrieval
        recall = recall_at_k(embed(trainer.encode_image, r["images"]),
                             embed(trainer.encode_text, r["tokens"]),
                             np.arange(len(r["images"])), ks=(1, 5), caption_groups=r["groups"])
        for key, name in (("image_to_text", "i2t"), ("text_to_image", "t2i")):
            out[f"{name}_r1"], out[f"{name}_r5"] = recall[key][1], recall[key][5]
    return out


def run_study(settings: StudySettings, workdir: str, log=print, on_run=None,
              done: Optional[list] = None) -> dict:
    """Every (seed, batch size) run, seeds outermost (after the first seed the whole curve
    exists); returns the JSON-able results. `on_run(results so far)` is called after each run
    (the tool saves them, so an interrupted study keeps its runs); runs in `done` (from an
    earlier results file with the same settings) are kept and not repeated."""
    from basic_tf import config, from_gin
    from benchmarks import scaling_data

    settings.check()
    config.parse(list(settings.gin_files), list(settings.gin_bindings))
    probe = from_gin.dual_encoder()
    image_size, seq_len = probe.image_size, probe.max_text_len
    del probe
    start = time.time()
    if settings.dataset == "grid":
        data = scaling_data.grid_data(workdir, seq_len, settings.train_grids,
                                      settings.heldout_grids, settings.retrieval_pairs,
                                      settings.eval_examples)
    else:
        data = scaling_data.fashion_mnist_data(workdir, seq_len,
                                               eval_examples=settings.eval_examples)
    log(f"{settings.dataset} data ready in {time.time() - start:.0f} s: {data.facts}")
    trainer = StudyTrainer(settings, data.train_images, data.caption_tokens[:2, 0])
    runs = list(done or [])
    results = None
    for seed in settings.seeds:
        for batch in settings.batch_sizes:
            if any(r["batch"] == batch and r["seed"] == seed for r in runs):
                continue
            seconds, steps, train_loss = trainer.train(data, batch, seed)
            metrics = evaluate(trainer, data, seed)
            runs.append({"batch": batch, "seed": seed, "steps": steps,
                         "examples_seen": steps * batch, "peak_lr": settings.peak_lr(batch),
                         "micro_batches": max(1, batch // settings.max_micro_batch),
                         "seconds": round(seconds, 1), "final_train_loss": train_loss,
                         **metrics})
            recall = (f", R@1 i2t {metrics['i2t_r1']:.3f} t2i {metrics['t2i_r1']:.3f}"
                      if "i2t_r1" in metrics else "")
            log(f"batch {batch:5d} seed {seed}: {steps} steps in {seconds:.0f} s, zero-shot "
                f"test {metrics['zero_shot_test']:.3f}{recall}, loss gap "
                f"{metrics['loss_gap']:+.3f}")
            results = {"settings": dataclasses.asdict(settings), "image_size": image_size,
                       "seq_len": seq_len, "data": data.facts,
                       "train_phrasings": data.train_phrasings,
                       "zero_shot_templates": list(data.zero_shot_templates), "runs": runs,
                       "summary": summarise(runs)}
            if on_run is not None:
                on_run(results)
    return results


def summarise(runs: list) -> list:
    """Per batch size: mean and sample standard deviation over seeds of each metric."""
    out = []
    for batch in sorted({r["batch"] for r in runs}):
        rs = [r for r in runs if r["batch"] == batch]
        row = {"batch": batch, "seeds": len(rs), "steps": rs[0]["steps"],
               "micro_batches": rs[0].get("micro_batches", 1)}
        for key in METRICS:
            if key not in rs[0]:
                continue
            values = np.array([r[key] for r in rs], np.float64)
            row[key] = float(values.mean())
            row[key + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


def load_done(json_path: str, settings: StudySettings) -> list:
    """The runs of an earlier results file written with the same settings (else [])."""
    if not os.path.exists(json_path):
        return []
    with open(json_path) as f:
        old = json.load(f)
    same = old.get("settings") == json.loads(json.dumps(dataclasses.asdict(settings)))
    return old.get("runs", []) if same else []


def save(results: dict, json_path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    tmp = json_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, json_path)

"""Contrastive batch-size scaling study on Fashion-MNIST (run by tools/scaling_study.py).

BASIC (Pham et al., Sec. 3 and 6) claims that a larger contrastive batch gives better zero-shot
accuracy and a smaller generalisation gap. Here the gin config's dual encoder (the demo config)
is trained from scratch on Fashion-MNIST image-caption pairs at each contrastive batch size, all
runs seeing the same number of examples (so larger batches take fewer steps), with BASIC's exact
accumulation for batches above `max_micro_batch`, for several seeds. Then:
- zero-shot top-1 on the 10,000 test images, with the evaluation prompts of
  basic_tf/zeroshot (different from the training caption templates of basic_tf/data);
- the generalisation gap, two ways: zero-shot top-1 on 10,000 training images minus test top-1,
  and held-out minus training contrastive loss at one fixed evaluation batch size.

Training captions: each image gets one of the training templates filled with its class name,
drawn afresh at every step. The text tower is therefore trained on 10 classes x T templates
distinct captions: same-class pairs in a batch are false negatives, and their number grows with
the batch. AdamW; the learning rate follows the square-root rule, lr(B) = base_lr *
sqrt(B / 256), with linear warm-up over 10% of the steps and cosine decay to 0.
"""
import dataclasses
import json
import math
import os
import time
from typing import Optional, Sequence

import numpy as np

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass
class StudySettings:
    gin_files: Sequence[str] = ("demo",)
    gin_bindings: Sequence[str] = ()
    batch_sizes: Sequence[int] = BATCH_SIZES
    seeds: Sequence[int] = (0, 1, 2)
    examples_seen: int = 60_000
    base_lr: float = 1e-3
    weight_decay: float = 0.1
    max_micro_batch: int = 256
    eval_batch: int = 256
    train_limit: int = 60_000
    eval_examples: int = 10_000


def load_pairs(image_size: int, limit: Optional[int] = None):
    """Fashion-MNIST as float32 [N, S, S, 3] in [0, 1] and int32 labels, for train and test."""
    import tensorflow as tf
    from basic_tf.data import fashion_mnist

    out = {}
    for split in ("train", "test"):
        images, labels = fashion_mnist.load(split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = tf.image.resize(tf.constant(images[..., None], tf.float32) / 255.0,
                            [image_size, image_size])
        out[split] = (tf.image.grayscale_to_rgb(x).numpy(), labels.astype(np.int32))
    return out


def train_tokenizer(workdir: str, captions: Sequence[str]) -> str:
    """A SentencePiece model trained on the training captions only (words of the evaluation
    prompts that never occur in them are split into pieces); returns its path."""
    from basic_tf.data import tokenizer
    return tokenizer.train_sentencepiece(list(captions) * 20, os.path.join(workdir, "spm"), 200)


def learning_rate(base: float, step: int, steps: int) -> float:
    """Linear warm-up over the first 10% of the steps, then cosine decay to 0."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class StudyTrainer:
    """One model, optimizer and set of traced functions for every run of the study: each run
    re-initialises the weights (a freshly built model's, from the run's seed) and zeroes the
    optimizer state, so no run pays for tracing again (a trace costs tens of seconds here)."""

    def __init__(self, settings: StudySettings, example_images, example_tokens):
        import keras
        import tensorflow as tf
        from basic_tf import config, losses
        from basic_tf.models import DualEncoder

        self.settings = settings
        config.parse(list(settings.gin_files), list(settings.gin_bindings))
        self.model = DualEncoder()
        self.inputs = {"images": example_images[:2], "token_ids": example_tokens[:2]}
        self.model(self.inputs)
        self.optimizer = keras.optimizers.AdamW(learning_rate=settings.base_lr,
                                                weight_decay=settings.weight_decay)
        self.optimizer.build(self.model.trainable_variables)
        self.encode_image = tf.function(lambda x: self.model.encode_image(x))
        self.contrastive_loss = tf.function(lambda x, t: losses.contrastive_loss(
            self.model.encode_image(x), self.model.encode_text(t), self.model.logit_scale,
            logit_bias=self.model.logit_bias))
        self._steps = {}

    def reset(self, seed: int) -> None:
        """Weights of a fresh model built with `seed`; zero optimizer state and step count.
        Keras initializers without a seed draw theirs from Python's `random`, so seeding it
        is enough (keras.utils.set_random_seed would also clear TF's eager kernel cache, which
        costs a re-optimisation of every traced function)."""
        import random

        from basic_tf.models import DualEncoder

        random.seed(seed)
        fresh = DualEncoder()
        fresh(self.inputs)
        self.model.set_weights(fresh.get_weights())
        for v in self.optimizer.variables:
            if v is not self.optimizer._learning_rate:
                v.assign(np.zeros(v.shape, v.dtype))

    def step_fn(self, micro: int):
        import tensorflow as tf
        from basic_tf.training.accumulation import contrastive_gradients

        if micro not in self._steps:
            model, optimizer = self.model, self.optimizer

            @tf.function
            def step(x, t, s):
                loss, grads = contrastive_gradients(model, x, t, micro, seed=s)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            self._steps[micro] = step
        return self._steps[micro]

    def train(self, data, caption_tokens: np.ndarray, batch: int, seed: int):
        """Trains from a fresh initialisation at one batch size: (seconds, steps, final loss)."""
        import tensorflow as tf

        self.reset(seed)
        s = self.settings
        images, labels = data["train"]
        steps = max(1, s.examples_seen // batch)
        step = self.step_fn(max(1, batch // s.max_micro_batch))
        base = s.base_lr * math.sqrt(batch / 256.0)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        position, losses, start = 0, [], time.time()
        for i in range(steps):
            if position + batch > len(order):
                order, position = rng.permutation(len(images)), 0
            idx = order[position:position + batch]
            position += batch
            template = rng.integers(0, caption_tokens.shape[0], size=batch)
            self.optimizer.learning_rate = learning_rate(base, i, steps)
            losses.append(float(step(images[idx], caption_tokens[template, labels[idx]],
                                     tf.constant([seed, i], tf.int32))))
        return time.time() - start, steps, float(np.mean(losses[-max(1, steps // 10):]))


def zero_shot_top1(encode_image, classifier: np.ndarray, images: np.ndarray,
                   labels: np.ndarray, batch: int = 500) -> float:
    correct = 0
    for begin in range(0, len(images), batch):
        emb = encode_image(images[begin:begin + batch]).numpy()
        correct += int(np.sum(np.argmax(emb @ classifier, axis=1) == labels[begin:begin + batch]))
    return correct / len(images)


def contrastive_loss_at(loss_fn, images, labels, caption_tokens, batch: int, seed: int,
                        batches: int = 8) -> float:
    """Mean of loss_fn(images, token_ids) over `batches` random batches of a fixed size."""
    rng = np.random.default_rng(1000 + seed)
    values = []
    for _ in range(batches):
        idx = rng.choice(len(images), batch, replace=False)
        template = rng.integers(0, caption_tokens.shape[0], size=batch)
        values.append(float(loss_fn(images[idx], caption_tokens[template, labels[idx]])))
    return float(np.mean(values))


def run_study(settings: StudySettings, workdir: str, log=print, on_run=None) -> dict:
    """Every (batch size, seed) run; returns the JSON-able results. `on_run(results so far)`
    is called after each run (the tool saves them, so an interrupted study keeps its runs)."""
    import tensorflow as tf
    from basic_tf import config
    from basic_tf.data import sources
    from basic_tf.data.tokenizer import Tokenizer
    from basic_tf.models import DualEncoder
    from basic_tf.zeroshot import build_zero_shot_classifier, load_class_names, load_templates

    config.parse(list(settings.gin_files), list(settings.gin_bindings))
    probe = DualEncoder()
    image_size, seq_len = probe.image_size, probe.max_text_len
    del probe
    class_names = load_class_names("fashion_mnist")
    eval_templates = load_templates("fashion_mnist")
    train_templates = sources.caption_templates()
    captions = [t.format(c) for t in train_templates for c in class_names]
    tokenizer = Tokenizer(train_tokenizer(workdir, captions), seq_len)
    # [T, C, L]: the tokens of template t filled with class c.
    caption_tokens = tokenizer(tf.constant(captions)).numpy().reshape(
        len(train_templates), len(class_names), -1)
    data = load_pairs(image_size, settings.train_limit)
    trainer = StudyTrainer(settings, data["train"][0], caption_tokens[0])
    n_eval = settings.eval_examples
    runs = []
    for batch in settings.batch_sizes:
        for seed in settings.seeds:
            seconds, steps, train_loss = trainer.train(data, caption_tokens, batch, seed)
            classifier = build_zero_shot_classifier(trainer.model.encode_text, tokenizer,
                                                    class_names, eval_templates)
            test_acc = zero_shot_top1(trainer.encode_image, classifier,
                                      *[a[:n_eval] for a in data["test"]])
            train_acc = zero_shot_top1(trainer.encode_image, classifier,
                                       *[a[:n_eval] for a in data["train"]])
            loss_train = contrastive_loss_at(trainer.contrastive_loss, *data["train"],
                                             caption_tokens, settings.eval_batch, seed)
            loss_test = contrastive_loss_at(trainer.contrastive_loss, *data["test"],
                                            caption_tokens, settings.eval_batch, seed)
            runs.append({"batch": batch, "seed": seed, "steps": steps,
                         "micro_batches": max(1, batch // settings.max_micro_batch),
                         "seconds": round(seconds, 1), "final_train_loss": train_loss,
                         "zero_shot_test": test_acc, "zero_shot_train": train_acc,
                         "accuracy_gap": train_acc - test_acc,
                         "eval_loss_train": loss_train, "eval_loss_test": loss_test,
                         "loss_gap": loss_test - loss_train})
            log(f"batch {batch:5d} seed {seed}: {steps} steps in {seconds:.0f} s, zero-shot test "
                f"{test_acc:.3f} (train {train_acc:.3f}), loss gap {loss_test - loss_train:+.3f}")
            results = {"settings": dataclasses.asdict(settings), "image_size": image_size,
                       "train_templates": list(train_templates),
                       "eval_templates": list(eval_templates), "runs": runs,
                       "summary": summarise(runs)}
            if on_run is not None:
                on_run(results)
    return results


def summarise(runs: list) -> list:
    """Per batch size: mean and sample standard deviation over seeds of each metric."""
    out = []
    for batch in sorted({r["batch"] for r in runs}):
        rs = [r for r in runs if r["batch"] == batch]
        row = {"batch": batch, "seeds": len(rs), "steps": rs[0]["steps"]}
        for key in ("zero_shot_test", "zero_shot_train", "accuracy_gap", "loss_gap",
                    "eval_loss_test", "seconds"):
            values = np.array([r[key] for r in rs], np.float64)
            row[key] = float(values.mean())
            row[key + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


def plot(results: dict, path: str) -> None:
    """Zero-shot test accuracy and the generalisation gaps against batch size (log2), with
    one-standard-deviation error bars over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    b = [r["batch"] for r in s]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].errorbar(b, [r["zero_shot_test"] for r in s],
                     yerr=[r["zero_shot_test_std"] for r in s], marker="o", capsize=3)
    axes[0].set_ylabel("zero-shot top-1 (Fashion-MNIST test)")
    axes[1].errorbar(b, [r["accuracy_gap"] for r in s], yerr=[r["accuracy_gap_std"] for r in s],
                     marker="o", capsize=3, label="top-1 train - test")
    axes[1].errorbar(b, [r["loss_gap"] for r in s], yerr=[r["loss_gap_std"] for r in s],
                     marker="s", capsize=3,
                     label=f"loss test - train (batch {results['settings']['eval_batch']})")
    axes[1].axhline(0.0, color="grey", lw=0.5)
    axes[1].set_ylabel("generalisation gap")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("contrastive batch size")
        ax.grid(alpha=0.3)
    seen = results["settings"]["examples_seen"]
    fig.suptitle(f"{'+'.join(results['settings']['gin_files'])}: {seen:,} examples per run, "
                 f"{len(results['settings']['seeds'])} seeds (mean +- 1 sd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(results: dict, json_path: str, png_path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, png_path)

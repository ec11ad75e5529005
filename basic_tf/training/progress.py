"""What a person reads during training: one progress line per N steps, and the run's gin record.

TensorBoard scalars are written by orbit from the trainer's loop outputs (model_dir/train and
model_dir/eval); this module adds the readable line and the operative gin config
(model_dir/operative_config.gin and a text summary), the run's record of what it used.
"""
import dataclasses
import datetime
import os
import time
from typing import Callable

import tensorflow as tf
from absl import logging
from orbit import controller as orbit_controller

_LINE_FIELDS = (("loss", "loss {:.4f}"), ("image_to_text_accuracy", "i2t {:.3f}"),
                ("text_to_image_accuracy", "t2i {:.3f}"), ("accuracy", "acc {:.3f}"),
                ("temperature", "T {:.4f}"), ("learning_rate", "lr {:.2e}"),
                ("grad_norm", "|g| {:.3g}"), ("examples_per_second", "{:.1f} ex/s"))


def quiet_orbit() -> None:
    """orbit's Controller prints each loop's raw output dict to stdout and logs it again; our
    ProgressLogger line says the same once. Its messages go to the debug log instead
    (--verbosity=1 shows them)."""
    orbit_controller._log = lambda message: logging.debug("%s", message)


class ProgressLogger:
    """orbit train action: logs one line whenever `every` more steps have run, e.g.

      step 400/1000 (40%) | loss 2.3145 | i2t 0.312 | ... | 51.2 ex/s | skipped 0 rec, 0 steps |
      ETA 0:03:12
    ETA = remaining steps / steps per second since the previous line.
    """

    def __init__(self, step: tf.Variable, total_steps: int, every: int):
        self.step, self.total_steps, self.every = step, total_steps, max(int(every), 1)
        self._last_step = int(step.numpy())
        self._last_time = time.perf_counter()
        self._last_logged = self._last_step
        self.lines = []  # kept for tests and callers

    def __call__(self, output: dict) -> None:
        step = int(self.step.numpy())
        if step - self._last_logged < self.every and step < self.total_steps:
            return
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time, self._last_logged = step, now, step
        parts = [f"step {step}/{self.total_steps} ({100 * step // max(self.total_steps, 1)}%)"]
        parts += [fmt.format(float(output[k])) for k, fmt in _LINE_FIELDS if k in output]
        causes = ", ".join(f"{k.split('/', 1)[1]} {int(v)}" for k, v in output.items()
                           if k.startswith("skipped_records/") and v)
        parts.append(f"skipped {int(output.get('skipped_records', 0))} rec"
                     + (f" ({causes})" if causes else "")
                     + f", {int(output.get('skipped_steps', 0))} steps")
        eta = (self.total_steps - step) / rate if rate > 0 else 0.0
        parts.append(f"ETA {datetime.timedelta(seconds=round(eta))}")
        line = " | ".join(parts)
        self.lines.append(line)
        logging.info("%s", line)


@dataclasses.dataclass(frozen=True)
class ConfigText:
    """The run's configuration as text, from the top (basic_tf.from_gin: gin's).

    given: the bindings this run was given (compared with model_dir's previous record on
      resume, settings_diff.changed_settings).
    operative: -> every binding the run used, defaults included (written after the first loop,
      when every configurable has been called).
    """
    given: str
    operative: Callable[[], str]


class OperativeConfigWriter:
    """orbit train action: after the first loop (when every configurable has been called, the
    step's included) writes config_text() (from_gin: gin's operative config, the bindings used)
    to model_dir/operative_config.gin (atomically) and as a TensorBoard text summary in
    summary_dir. Later calls do nothing."""

    def __init__(self, model_dir: str, summary_dir: str, step: tf.Variable,
                 config_text: Callable[[], str]):
        self.model_dir, self.summary_dir, self.step = model_dir, summary_dir, step
        self.config_text = config_text
        self.path = None

    def __call__(self, output: dict) -> None:
        del output
        if self.path is None:
            self.path = write_operative_config(self.model_dir, self.summary_dir,
                                               int(self.step.numpy()), self.config_text())


def write_operative_config(model_dir: str, summary_dir: str, step: int, text: str) -> str:
    """Writes the operative config `text` to model_dir/operative_config.gin and as a text
    summary at `step`; returns the file path."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, "operative_config.gin")
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    writer = tf.summary.create_file_writer(summary_dir)
    with writer.as_default():
        # Markdown: indent by four spaces so TensorBoard shows it verbatim.
        tf.summary.text("gin/operative_config",
                        "\n".join("    " + line for line in text.splitlines()), step=step)
    writer.flush()
    return path

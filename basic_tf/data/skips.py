"""Skipped records counted by cause, and the two checks that stop a pipeline that yields nothing.

Causes (`SKIP_CAUSES`, the order of every per-cause vector):
  parse_error    the record is not a tf.train.Example of the schema
  bad_image      the image does not decode (or is not JPEG, PNG or WebP)
  empty_caption  every caption is blank
  too_large      the image has more pixels than input_limits.max_image_pixels (from its header)
  truncated      the record was lost with the tail of a truncated shard (stats sidecar count)

The pipeline (basic_tf.data.pipeline) numbers each element before decoding; a record whose
image does not decode is dropped by `ignore_errors` and leaves a gap in those numbers. Records
skipped for a cause known before (parse_error, empty_caption, too_large, a header that is no
image) arrive as rows of kind `bad_kind` with their cause. `account` is the scan, over batches
of elements, after the last drop: it counts both by cause, attaches them to the next example
("skipped" int32 and "skipped_by_cause" int32 [C] per example, so sums over consumed batches are
exact), and fails
the pipeline with a message naming the file pattern and the counts by cause when
  * more than max_skipped_fraction of the records read were skipped, or
  * no usable record came out of a whole pass over the files (without this check, repeating a
    stream of empty or all-bad shards spins forever with no step and no output).
The failure is an InvalidArgumentError from the iterator; `input_error_message` gets the
readable message back out of it.
"""
import re
from typing import Optional

import tensorflow as tf

SKIP_CAUSES = ("parse_error", "bad_image", "empty_caption", "too_large", "truncated")
PARSE_ERROR, BAD_IMAGE, EMPTY_CAPTION, TOO_LARGE, TRUNCATED = range(len(SKIP_CAUSES))
NUM_CAUSES = len(SKIP_CAUSES)
OK = -1  # cause of a usable record

_MESSAGE_START = "input pipeline stopped:"


def _fail(template: str, *args) -> tf.Tensor:
    """An always-failing Assert whose message is `template` with each {} replaced by the
    matching tensor of args (numbers or strings, written without quotes)."""
    pieces = template.split("{}")
    assert len(pieces) == len(args) + 1, template
    parts = [pieces[0]]
    for arg, piece in zip(args, pieces[1:]):
        parts += [arg if arg.dtype == tf.string else tf.strings.as_string(arg), piece]
    message = tf.strings.join([_MESSAGE_START + " "] + parts)
    with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
        return tf.constant(True)


def _format_counts(counts: tf.Tensor) -> tf.Tensor:
    """int64 [C] -> tf.string 'parse_error=.., bad_image=.., ...'."""
    parts = [tf.strings.join([name + "=", tf.strings.as_string(counts[i])])
             for i, name in enumerate(SKIP_CAUSES)]
    return tf.strings.reduce_join(tf.stack(parts), separator=", ")


def account(*, where: str, num_files: int, max_skipped_fraction: Optional[float],
            min_records_for_fraction: int, stall_elements: Optional[int], end_kind: int,
            record_kind: int, bad_kind: int):
    """(initial state, scan function) for tf.data.Dataset.scan over *batches* of decoded
    elements (any batch size >= 1, in element order; vector ops, no per-element step).

    Each element has: index int64 (its number before the decode, whose drops are bad images),
    kind, missing int64 (records lost from a truncated shard's tail), cause int32 (a
    SKIP_CAUSES index for kind == bad_kind). Out: the batch's
    emitted elements only (kind == record_kind, and end_kind rows that carry skips), without
    those fields and kind, plus skipped int32 [m] and skipped_by_cause int32 [m, C]: the
    records dropped since the previous emitted element (an end_kind row carries the skips after
    the last record). The element count of the output varies; rebatch it.

    where: the file pattern for messages. stall_elements: fail when this many elements pass
    with no usable record (None: never; evaluation fails instead at end_kind if nothing was
    usable). min_records_for_fraction: records to read before the fraction bound applies. The
    checks are those of each element in turn; the first element that fails them stops the
    pipeline with its counts.
    """
    zeros = tf.zeros([NUM_CAUSES], tf.int64)
    state = {"last": tf.constant(-1, tf.int64), "pending": zeros, "totals": zeros,
             "good": tf.constant(0, tf.int64), "last_good": tf.constant(-1, tf.int64)}
    bound = -1.0 if max_skipped_fraction is None else float(max_skipped_fraction)
    unit = tf.eye(NUM_CAUSES, dtype=tf.int64)

    def step(s, e):
        index, kind = e["index"], e["kind"]
        gap = index - tf.concat([[s["last"]], index[:-1]], 0) - 1  # dropped by the decode
        bad = tf.gather(unit, tf.maximum(e["cause"], 0)) * tf.cast(
            kind == bad_kind, tf.int64)[:, None]
        add = (gap[:, None] * unit[BAD_IMAGE] + e["missing"][:, None] * unit[TRUNCATED]
               + bad)                                                    # [m, C]
        running = tf.cumsum(add, axis=0)
        totals = s["totals"] + running                                   # after each element
        pending = s["pending"] + running
        is_record = kind == record_kind
        is_end = kind == end_kind
        emit = is_record | is_end
        records_so_far = tf.cumsum(tf.cast(is_record, tf.int64))
        good = s["good"] + records_so_far
        record_index = tf.concat([[s["last_good"]], tf.boolean_mask(index, is_record)], 0)
        last_good = tf.gather(record_index, records_so_far)
        skipped, read = tf.reduce_sum(totals, 1), good + tf.reduce_sum(totals, 1)

        stalled = is_end & (good == 0)
        if stall_elements is not None:
            stalled |= index - last_good > stall_elements
        over = tf.zeros_like(stalled)
        if bound >= 0:
            over = (read >= min_records_for_fraction) & (
                tf.cast(skipped, tf.float64) > bound * tf.cast(read, tf.float64))
        failing = over | stalled

        def fail():  # the messages are built only when stopping
            k = tf.argmax(tf.cast(failing, tf.int32), output_type=tf.int32)  # the first one
            too_many = lambda: _fail(
                f"file_pattern '{where}': {{}} of {{}} records read were skipped, more than "
                f"make_dataset.max_skipped_fraction={bound}; skipped by cause: {{}}. Check the "
                f"shards with tools/make_tfrecords.py --validate='{where}'",
                skipped[k], read[k], _format_counts(totals[k]))
            nothing = lambda: _fail(
                f"file_pattern '{where}': no usable record in a whole pass over its {num_files} "
                f"file(s): {{}} records read, {{}} usable; skipped by cause: {{}}. Check the "
                f"shards with tools/make_tfrecords.py --validate='{where}'",
                read[k], good[k], _format_counts(totals[k]))
            return tf.cond(over[k], too_many, nothing)

        checks = [tf.cond(tf.reduce_any(failing), fail, lambda: tf.constant(True))]
        # pending skips at each emitted element, minus those at the emitted element before it
        at_emitted = tf.concat([zeros[None], tf.boolean_mask(pending, emit)], 0)
        by_cause = at_emitted[1:] - at_emitted[:-1]                      # [e, C]
        emitted_kind = tf.boolean_mask(kind, emit)
        keep = (emitted_kind == record_kind) | (tf.reduce_sum(by_cause, 1) > 0)
        rows = tf.boolean_mask(tf.where(emit)[:, 0], keep)
        with tf.control_dependencies(checks):
            out = {k: v for k, v in e.items()
                   if k not in ("index", "kind", "missing", "cause")}
            # most batches keep every row: no copy of their images then
            out = tf.cond(tf.size(rows) == tf.size(index), lambda: out,
                          lambda: {k: tf.gather(v, rows) for k, v in out.items()})
            out["skipped_by_cause"] = tf.cast(tf.boolean_mask(by_cause, keep), tf.int32)
            out["skipped"] = tf.reduce_sum(out["skipped_by_cause"], 1)
        new = {"last": index[-1], "pending": pending[-1] - at_emitted[-1], "totals": totals[-1],
               "good": good[-1], "last_good": last_good[-1]}
        return new, out

    return state, step


def input_error_message(error: BaseException) -> Optional[str]:
    """The readable message of a pipeline stop (see module doc) inside a TensorFlow error, or
    None if `error` is something else."""
    match = re.search(re.escape(_MESSAGE_START) + r".*?(?=\]\s*(\n|$))", str(error),
                      flags=re.DOTALL)
    # tf.debugging.Assert prints its string escaped
    return match.group(0).replace("\\'", "'").replace('\\"', '"') if match else None


class SkippedRecordsCounter(tf.Module):
    """Running totals of records the pipeline skipped (by cause) and captions it cut, from the
    consumed batches' "skipped", "skipped_by_cause" and "captions_cut".

    Put it in the training checkpoint so the totals survive a resume. Call `update` in
    cross-replica context (outside strategy.run), with the per-replica batch a distributed
    iterator returned (or a plain batch when no strategy is used). `summaries()` gives the
    loop-output entries (TensorBoard scalars): skipped_records, skipped_records/<cause>,
    captions_cut.
    """

    def __init__(self, name: Optional[str] = None):
        super().__init__(name=name)
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.total = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_records",
                                 aggregation=first)
        self.by_cause = tf.Variable(tf.zeros([NUM_CAUSES], tf.int64), trainable=False,
                                    name="skipped_by_cause", aggregation=first)
        self.captions_cut = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        name="captions_cut", aggregation=first)

    def update(self, batch: dict, strategy: Optional[tf.distribute.Strategy] = None) -> tf.Tensor:
        """Adds the batch's counts (summed over replicas); returns its int64 skipped records.
        A batch without the per-cause keys (e.g. a mesh step's) adds only to the total."""
        def total(key):  # [b] -> [], [b, C] -> [C], summed over the batch and replicas
            if strategy is not None:
                return tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, batch[key], axis=0),
                               tf.int64)
            return tf.cast(tf.reduce_sum(batch[key], axis=0), tf.int64)

        n = total("skipped")
        self.total.assign_add(n)
        if "skipped_by_cause" in batch:
            self.by_cause.assign_add(total("skipped_by_cause"))
        if "captions_cut" in batch:
            self.captions_cut.assign_add(total("captions_cut"))
        return n

    def summaries(self) -> dict:
        """{"skipped_records": int, "skipped_records/<cause>": int, ..., "captions_cut": int}."""
        out = {"skipped_records": int(self.total.numpy())}
        out.update({f"skipped_records/{c}": int(n)
                    for c, n in zip(SKIP_CAUSES, self.by_cause.numpy())})
        out["captions_cut"] = int(self.captions_cut.numpy())
        return out

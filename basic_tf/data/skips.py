"""Skipped records counted by cause, and the two checks that stop a pipeline that yields nothing.

Causes (`SKIP_CAUSES`, the order of every per-cause vector):
  parse_error    the record is not a tf.train.Example of the schema
  bad_image      the image does not decode (or is not JPEG, PNG or WebP)
  empty_caption  every caption is blank
  too_large      the image has more pixels than input_limits.max_image_pixels (from its header)
  truncated      the record was lost with the tail of a truncated shard (stats sidecar count)

The pipeline (basic_tf.data.pipeline) numbers each element before decoding; a record dropped by
`ignore_errors` leaves a gap in those numbers. `account` is the scan after the last drop: it
splits the gaps by cause, attaches them to the next example ("skipped" int32 and
"skipped_by_cause" int32 [C] per example, so sums over consumed batches are exact), and fails
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
    """(initial state, scan function) for tf.data.Dataset.scan over decoded elements.

    Each element has: index int64 (its number before decoding), parse_dropped int64 (records
    dropped by the parse step before it), kind, missing int64 (records lost from a truncated
    shard's tail), cause int32 (a SKIP_CAUSES index for kind == bad_kind). Out: the element
    without those, plus skipped int32 and skipped_by_cause int32 [C] (non-zero only on emitted
    elements: kind == record_kind, or end_kind which carries the skips after the last record).

    where: the file pattern for messages. stall_elements: fail when this many elements pass
    with no usable record (None: never; evaluation fails instead at end_kind if nothing was
    usable). min_records_for_fraction: records to read before the fraction bound applies.
    """
    zeros = tf.zeros([NUM_CAUSES], tf.int64)
    state = {"last": tf.constant(-1, tf.int64), "last_parse": tf.constant(0, tf.int64),
             "pending": zeros, "totals": zeros, "good": tf.constant(0, tf.int64),
             "last_good": tf.constant(-1, tf.int64)}
    bound = -1.0 if max_skipped_fraction is None else float(max_skipped_fraction)

    def step(s, e):
        gap = e["index"] - s["last"] - 1          # dropped by parse or decode since the last
        parse = e["parse_dropped"] - s["last_parse"]
        bad = tf.one_hot(tf.maximum(e["cause"], 0), NUM_CAUSES, dtype=tf.int64) * tf.cast(
            e["kind"] == bad_kind, tf.int64)
        add = (tf.one_hot(PARSE_ERROR, NUM_CAUSES, dtype=tf.int64) * parse
               + tf.one_hot(BAD_IMAGE, NUM_CAUSES, dtype=tf.int64) * (gap - parse)
               + tf.one_hot(TRUNCATED, NUM_CAUSES, dtype=tf.int64) * e["missing"] + bad)
        pending, totals = s["pending"] + add, s["totals"] + add
        is_record = e["kind"] == record_kind
        emit = is_record | (e["kind"] == end_kind)
        good = s["good"] + tf.cast(is_record, tf.int64)
        last_good = tf.where(is_record, e["index"], s["last_good"])
        skipped, read = tf.reduce_sum(totals), good + tf.reduce_sum(totals)

        stalled = (e["kind"] == end_kind) & (good == 0)
        if stall_elements is not None:
            stalled |= e["index"] - last_good > stall_elements
        over = tf.constant(False)
        if bound >= 0:
            over = (read >= min_records_for_fraction) & (
                tf.cast(skipped, tf.float64) > bound * tf.cast(read, tf.float64))

        def fail():  # one cond per element: the messages are built only when stopping
            too_many = lambda: _fail(
                f"file_pattern '{where}': {{}} of {{}} records read were skipped, more than "
                f"make_dataset.max_skipped_fraction={bound}; skipped by cause: {{}}. Check the "
                f"shards with tools/make_tfrecords.py --validate='{where}'",
                skipped, read, _format_counts(totals))
            nothing = lambda: _fail(
                f"file_pattern '{where}': no usable record in a whole pass over its {num_files} "
                f"file(s): {{}} records read, {{}} usable; skipped by cause: {{}}. Check the "
                f"shards with tools/make_tfrecords.py --validate='{where}'",
                read, good, _format_counts(totals))
            return tf.cond(over, too_many, nothing)

        checks = [tf.cond(over | stalled, fail, lambda: tf.constant(True))]
        with tf.control_dependencies(checks):
            out = {k: v for k, v in e.items()
                   if k not in ("index", "parse_dropped", "missing", "cause")}
            out["skipped_by_cause"] = tf.cast(tf.where(emit, pending, zeros), tf.int32)
            out["skipped"] = tf.reduce_sum(out["skipped_by_cause"])
        new = {"last": e["index"], "last_parse": e["parse_dropped"],
               "pending": tf.where(emit, zeros, pending), "totals": totals, "good": good,
               "last_good": last_good}
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

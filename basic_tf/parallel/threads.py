"""TensorFlow's CPU thread pools as gin settings, applied before its runtime starts.

TensorFlow runs each op on an intra-op pool (threads inside one op, e.g. a matmul) and
independent ops on an inter-op pool; both default to the number of cores (None here keeps that).
Which setting trains fastest depends on the shapes, XLA and the machine: benchmarks/ measures
them (`openclip_speed`, `mfu`: TensorFlow's default, one inter-op thread, one intra-op thread).
The sizes are fixed when TensorFlow's runtime starts (the first op, device listing by a strategy),
so the tools apply them right after parsing gin (basic_tf.cli.parse_gin_flags; the gin name
`cpu_threads` is registered in basic_tf.from_gin).

  cpu_threads.intra_op = 1     # e.g. in a gin file or --gin_bindings
"""
from typing import Optional



def apply_cpu_threads(intra_op: Optional[int] = None, inter_op: Optional[int] = None) -> None:
    """Sets the intra-/inter-op pool sizes (None: TensorFlow's default). A value that is not a
    positive int, or that arrives after the runtime started, is a ValueError naming the binding."""
    import tensorflow as tf
    threading = tf.config.threading
    for name, value, current, setter in (
            ("intra_op", intra_op, threading.get_intra_op_parallelism_threads,
             threading.set_intra_op_parallelism_threads),
            ("inter_op", inter_op, threading.get_inter_op_parallelism_threads,
             threading.set_inter_op_parallelism_threads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"cpu_threads.{name} = {value!r}: give a positive number of "
                             f"threads, or None for TensorFlow's default")
        try:
            setter(value)
        except RuntimeError:
            raise ValueError(
                f"cpu_threads.{name} = {value}: set too late, TensorFlow's runtime already "
                f"started with {current()} (0 = its default); the binding must be parsed "
                f"before the first op or strategy") from None

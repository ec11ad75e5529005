"""The DTensor device mesh (batch x model axes) and the guard that keeps sharded updates exact.

A mesh is two named axes: "batch" (data parallel: examples are split, weights replicated) and
"model" (weights are split by the layout rules in `layouts.py`). batch * model devices are used.

Why the guard exists (issue 7; feasibility.md section 4 reported Adam diverging on DVariables).
Root cause, found on TF 2.20 by dumping DTensor's MLIR after every pass: the pass
`DTensorAllReduceCombineOptimization` merges independent all-reduces into one and then
re-sorts the block with `mlir::sortTopologically`, which follows SSA values only. Resource
side effects are not edges, so in

    m.assign(g1); v.assign(g2); update = f(m.read_value(), v.read_value())

where g1 and g2 come out of all-reduces (a gradient reduced over "batch", or a value all-gathered
to a replicated variable's layout, which CPU/GPU lower to an all-reduce), the two all-reduces
are merged after both, `m`'s AssignVariableOp moves below the merged all-reduce and `m`'s
ReadVariableOp stays above it: the read sees the OLD value. Keras' Adam/AdamW (`assign_add(m)`
then `assign_sub(var, m * alpha / (sqrt(v) + eps))`) reads its slots right after writing them,
so the update used stale moments: a parameter was not moved at all in step 1 (m read as 0), or
moved by g / eps (v read as 0), which is the "blows up to 58,775" in the notes. Gradients were
always right. Which layouts fail depends only on whether two all-reduces end up adjacent:
bias ["model"] with batch-sharded data (the bias gradient is reduced over "batch"), or a
replicated bias (its "model"-sharded gradient is all-gathered), hence the confusing pattern.

The fix: turn the optimization off with DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION=0. TF reads
it once, when DTensor's device starts (the process's first DTensor call of any kind, even
`dtensor.is_dtensor`), so `make_mesh` sets it (unless the environment already has a value)
before it creates the mesh, and nothing in basic_tf calls DTensor before a mesh exists
(`sharding.to_numpy` asks only about tensors on a custom device). It then runs
`updates_are_ordered`, a probe that compiles the failing pattern and raises if a read after a
write still sees the old value. Importing the package sets nothing. The cost is one all-reduce
per reduced tensor instead of merged ones (communication latency on accelerators; nothing on
CPU). `tests/parallel/test_dtensor_ordering.py` shows the probe and
Keras AdamW failing with the optimization on, in a subprocess.
"""
import os
from typing import Optional

import tensorflow as tf
from tensorflow.experimental import dtensor

BATCH_AXIS = "batch"
MODEL_AXIS = "model"
MESH_AXES = (BATCH_AXIS, MODEL_AXIS)
COMBINER_ENV = "DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION"
DEVICE_TYPES = ("CPU", "GPU", "TPU")


def disable_allreduce_combiner() -> None:
    """Turns off DTensor's all-reduce combining (see the module docstring) unless the environment
    already chose. Effective only before DTensor's device starts: `make_mesh` calls it first."""
    os.environ.setdefault(COMBINER_ENV, "0")


def parse_mesh_flag(flag: str) -> dict:
    """'batch:2,model:4' -> {'batch': 2, 'model': 4}; a missing axis has size 1."""
    sizes = {BATCH_AXIS: 1, MODEL_AXIS: 1}
    seen = set()
    for part in flag.split(","):
        name, sep, size = part.strip().partition(":")
        if not sep or name not in sizes or not size.isdigit() or int(size) < 1 or name in seen:
            raise ValueError(f"--mesh={flag!r}: expected comma-separated axis:size pairs with axes "
                             f"from {MESH_AXES}, each once, sizes >= 1, e.g. 'batch:2,model:4'")
        seen.add(name)
        sizes[name] = int(size)
    return sizes


def default_device_type() -> str:
    """TPU if TPUs are visible, else GPU if GPUs are, else CPU."""
    for kind in ("TPU", "GPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return "CPU"


def make_mesh(batch: int = 1, model: int = 1, device_type: Optional[str] = None,
              check_ordering: bool = True) -> dtensor.Mesh:
    """A ("batch", "model") mesh on the first batch * model local devices of `device_type`.

    Args:
      batch: size of the data-parallel axis (each device gets batch_size / batch examples).
      model: size of the weight-sharding axis.
      device_type: "CPU", "GPU" or "TPU"; None picks the accelerator if any (default_device_type).
      check_ordering: run `updates_are_ordered` and raise if the all-reduce combiner is active.
    """
    if batch < 1 or model < 1:
        raise ValueError(f"make_mesh: batch={batch} and model={model} must be >= 1")
    disable_allreduce_combiner()  # before any DTensor program of this process is compiled
    device_type = device_type or default_device_type()
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"make_mesh.device_type={device_type!r} is not one of {DEVICE_TYPES}")
    if device_type == "TPU":
        dtensor.initialize_accelerator_system("TPU")
    devices = tf.config.list_logical_devices(device_type)
    if batch * model > len(devices):
        raise ValueError(f"make_mesh: batch={batch} x model={model} needs {batch * model} "
                         f"{device_type} devices but {len(devices)} are visible")
    names = [d.name for d in devices[:batch * model]]
    mesh = dtensor.create_mesh([(BATCH_AXIS, batch), (MODEL_AXIS, model)], devices=names,
                               device_type=device_type)
    if check_ordering and not updates_are_ordered(mesh):
        raise RuntimeError(
            f"DTensor's all-reduce combiner is active ({COMBINER_ENV}="
            f"{os.environ.get(COMBINER_ENV)!r}, or it was read before basic_tf set it): optimizer "
            f"updates on sharded variables would read stale slots. Set {COMBINER_ENV}=0 in the "
            "environment, or make the first mesh with make_mesh before any DTensor computation.")
    return mesh


def mesh_sizes(mesh: dtensor.Mesh) -> dict:
    """{'batch': n, 'model': m} of a mesh made by make_mesh."""
    return {name: mesh.dim_size(name) for name in mesh.dim_names}


def updates_are_ordered(mesh: dtensor.Mesh) -> bool:
    """True if, on this mesh, a variable read after a write in one tf.function sees the write.

    Compiles the smallest program that the all-reduce combiner breaks: two replicated variables
    assigned values all-gathered from a sharded input, then both read. Meshes with no axis
    larger than 1 have no collectives and are trivially ordered.
    """
    axes = [name for name in mesh.dim_names if mesh.dim_size(name) > 1]
    if not axes:
        return True
    size = mesh.dim_size(axes[0])
    replicated = dtensor.Layout.replicated(mesh, 1)
    first = dtensor.DVariable(dtensor.call_with_layout(tf.zeros, replicated, shape=[size]))
    second = dtensor.DVariable(dtensor.call_with_layout(tf.zeros, replicated, shape=[size]))
    ones = dtensor.call_with_layout(tf.ones, dtensor.Layout([axes[0]], mesh), shape=[size])

    @tf.function
    def write_then_read(x):
        first.assign(x)
        second.assign(x + x)
        return first.read_value() + second.read_value()

    total = dtensor.relayout(write_then_read(ones), replicated)
    return bool(tf.reduce_all(tf.equal(dtensor.unpack(total)[0], 3.0)).numpy())

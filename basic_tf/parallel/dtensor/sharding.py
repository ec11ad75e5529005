"""Put a built Keras 3 model, its optimizer and its batches on a DTensor mesh.

Keras 3's TensorFlow backend keeps each `keras.Variable`'s storage in a `tf.Variable`
(`variable._value`) and reads it through `.value`. Swapping that storage for a
`dtensor.DVariable` with the variable's layout makes every layer compute on DTensors with no
change to model code, and `tf.train.Checkpoint` saves the DVariable through the Keras variable.
The model is built unsharded first (same initial values as a one-device run; host memory holds
the full model once) and then moved shard by shard.

The optimizer is an ordinary Keras optimizer (AdamW, AdaFactorW, ...), built AFTER the model is
sharded (Keras keys its slots by the storage variable), then its slots get the layout of the
variable they belong to (`slot_spec`; factored second moments keep the layout of the
dimensions they keep) and its counters are replicated. Its update math then runs on DTensors and equals the
unsharded update, provided the all-reduce combiner is off (mesh.py explains why).

A training step needs nothing else: call the usual step function (contrastive gradients, then
`optimizer.apply_gradients`) inside `tf.function`, outside any tf.distribute strategy, on
batches from `shard_batch`. Gradients come out with the variables' layouts; the contrastive loss
sees the global batch (DTensor is a single logical program), so no all_gather is needed.
"""
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from basic_tf.parallel.dtensor import layouts as layouts_lib
from basic_tf.parallel.dtensor.mesh import BATCH_AXIS, mesh_sizes


def _shard_index(location: dict, shape, layout: dtensor.Layout) -> tuple:
    """The slice of a global array of `shape` that the device at mesh `location` holds."""
    index = []
    for dim, axis in zip(shape, layout.sharding_specs):
        if axis == dtensor.UNSHARDED:
            index.append(slice(None))
        else:
            size = dim // layout.mesh.dim_size(axis)
            index.append(slice(location[axis] * size, (location[axis] + 1) * size))
    return tuple(index)


def _place(value, layout: dtensor.Layout) -> tf.Tensor:
    """A host value -> a DTensor with `layout`: each local device gets its slice (dtensor.pack,
    no compiled relayout per shape, so sharding a model costs no DTensor compilations)."""
    value = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    shards = [tf.constant(value[_shard_index(location, value.shape, layout)])
              for location in layout.mesh.local_device_locations()]
    return dtensor.pack(shards, layout)


def _storage(variable):
    storage = getattr(variable, "_value", None)
    if not isinstance(storage, tf.Variable):
        raise TypeError(f"{getattr(variable, 'path', variable)} is not an initialised Keras 3 "
                        f"variable on the TensorFlow backend (storage {type(storage).__name__})")
    return storage


def _move_to_mesh(variable, spec: tuple, mesh: dtensor.Mesh) -> None:
    """Replaces a Keras variable's storage with a DVariable holding the same value."""
    storage = _storage(variable)
    if isinstance(storage, dtensor.DVariable):
        raise ValueError(f"variable {variable.path} is already on a DTensor mesh")
    value = _place(storage.read_value(), layouts_lib.to_dtensor_layout(spec, mesh))
    variable._value = dtensor.DVariable(value, trainable=storage.trainable, name=variable.name)


def shard_variables(variables: Sequence, mesh: dtensor.Mesh,
                    rules: Sequence[layouts_lib.Rule]) -> list:
    """Moves every variable to the mesh with its rule's layout; returns the plan (all checked
    before anything moves)."""
    variables = list(variables)
    plan = layouts_lib.plan_layouts(variables, rules, mesh_sizes(mesh))
    for variable, row in zip(variables, plan):
        _move_to_mesh(variable, row.spec, mesh)
    return plan


def shard_model(model, mesh: dtensor.Mesh, rules: Sequence[layouts_lib.Rule]) -> list:
    """shard_variables(model.variables): trainable weights and BatchNorm statistics alike."""
    if not model.built:
        raise ValueError("shard_model needs a built model (call it once or build it) so that "
                         "every variable exists")
    return shard_variables(model.variables, mesh, rules)


def slot_spec(slot_shape: tuple, variable_shape: tuple, variable_spec: tuple) -> tuple:
    """The layout of an optimizer slot, from its variable's.

    A slot shaped like its variable (Adam moments, momentum) shares its layout. A factored
    second-moment statistic (Adafactor: the variable reduced over its last or second-to-last
    dimension) keeps the layout of the dimensions it keeps; when both readings fit (square
    matrices) the more sharded one is taken. That is also a workaround: DTensor's reduction
    expander fails ("EmitAllScatter was passed a desired_layout ... which was not more sharded
    than the original_layout") when asked for a result less sharded than the reduction gives.
    Any other slot is replicated.
    """
    slot_shape, variable_shape = tuple(slot_shape), tuple(variable_shape)
    if slot_shape == variable_shape:
        return tuple(variable_spec)
    candidates = []
    if slot_shape == variable_shape[:-1]:
        candidates.append(tuple(variable_spec[:-1]))
    if len(variable_shape) >= 2 and slot_shape == variable_shape[:-2] + variable_shape[-1:]:
        candidates.append(tuple(variable_spec[:-2]) + tuple(variable_spec[-1:]))
    if candidates:
        return max(candidates, key=lambda spec: sum(axis is not None for axis in spec))
    return (None,) * len(slot_shape)


def _slot_lists(optimizer, num_variables: int) -> list:
    """The optimizer's per-variable slot lists (e.g. AdamW: momentums, velocities): list-valued
    attributes aligned with its trainable variables."""
    lists = []
    for name, value in sorted(vars(optimizer).items()):
        if name == "_trainable_variables" or not isinstance(value, list):
            continue
        if len(value) == num_variables and value and all(
                v is None or isinstance(v, tf.__internal__.types.Tensor) and hasattr(v, "_value")
                for v in value):
            lists.append(value)
    return lists


class _Named:
    """Path/shape/dtype triple for planning a slot under its own name."""

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype = path, shape, dtype


def plan_optimizer(optimizer, variable_plan: Sequence[layouts_lib.VariableLayout]) -> list:
    """Layouts for a built Keras optimizer's variables, given the plan of the variables it
    trains (`optimizer._trainable_variables` order). Works without allocating (for a model and
    optimizer built under keras.StatelessScope)."""
    trained = list(optimizer._trainable_variables)
    by_path = {row.path: row for row in variable_plan}
    missing = [v.path for v in trained if v.path not in by_path]
    if missing:
        raise ValueError(f"optimizer trains variables with no layout: {missing}")
    specs, seen = [], set()
    for slots in _slot_lists(optimizer, len(trained)):
        for slot, variable in zip(slots, trained):
            if slot is None or id(slot) in seen:
                continue
            seen.add(id(slot))
            row = by_path[variable.path]
            spec = slot_spec(tuple(slot.shape), row.shape, row.spec)
            specs.append((slot, spec, f"slot of {variable.path}"))
    for variable in optimizer.variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            specs.append((variable, (None,) * len(variable.shape), "optimizer state"))
    return [(slot, layouts_lib.VariableLayout(slot.path, tuple(int(d) for d in slot.shape),
                                              str(slot.dtype), spec, why))
            for slot, spec, why in specs]


def shard_optimizer(optimizer, variable_plan: Sequence[layouts_lib.VariableLayout],
                    mesh: dtensor.Mesh) -> list:
    """Moves a Keras optimizer's slots and counters to the mesh (see the module docstring).

    The optimizer must have been built (`optimizer.build(model.trainable_variables)`) after
    `shard_model`. Returns the optimizer's plan.
    """
    if not optimizer.built:
        raise ValueError("shard_optimizer: build the optimizer first, after shard_model: "
                         "optimizer.build(model.trainable_variables)")
    for variable in optimizer._trainable_variables:
        if not isinstance(_storage(variable), dtensor.DVariable):
            raise ValueError(f"optimizer was built on {variable.path} before it was sharded; "
                             "call shard_model first, then build the optimizer")
    rows = plan_optimizer(optimizer, variable_plan)
    for slot, row in rows:
        _move_to_mesh(slot, row.spec, mesh)
    return [row for _, row in rows]


def batch_layout(rank: int, mesh: dtensor.Mesh) -> dtensor.Layout:
    """Examples split over "batch", everything else whole, replicated over "model"."""
    return dtensor.Layout.batch_sharded(mesh, BATCH_AXIS, rank)


def shard_batch(x, mesh: dtensor.Mesh) -> tf.Tensor:
    """A host batch [N, ...] -> DTensor split on its first dimension over "batch"."""
    x = tf.convert_to_tensor(x)
    n, parts = x.shape[0], mesh.dim_size(BATCH_AXIS)
    if n is None or n % parts:
        raise ValueError(f"shard_batch: batch of {n} examples cannot be split evenly over the "
                         f"mesh's batch axis of size {parts}")
    return _place(x, batch_layout(x.shape.rank, mesh))


def replicate(x, mesh: dtensor.Mesh) -> tf.Tensor:
    """A host tensor -> replicated DTensor (e.g. the step's random seed)."""
    x = tf.convert_to_tensor(x)
    return dtensor.copy_to_mesh(x, dtensor.Layout.replicated(mesh, x.shape.rank))


def to_numpy(x) -> np.ndarray:
    """The full (global) value of a DTensor, DVariable or Keras variable on a mesh, assembled on
    the host from the local shards (dtensor.unpack; nothing is compiled); any other tensor's
    value. Only a tensor on a custom device can be a DTensor: asking DTensor about others would
    start its device, and with it fix its settings (mesh.py), in a process with no mesh yet."""
    if isinstance(getattr(x, "_value", None), tf.Variable):
        x = x._value
    x = x.read_value() if isinstance(x, tf.Variable) else tf.convert_to_tensor(x)
    if tf.DeviceSpec.from_string(x.device).device_type != "CUSTOM" or not dtensor.is_dtensor(x):
        return x.numpy()
    layout = dtensor.fetch_layout(x)
    out = np.zeros(x.shape, x.dtype.as_numpy_dtype)
    for location, shard in zip(layout.mesh.local_device_locations(), dtensor.unpack(x)):
        out[_shard_index(location, x.shape, layout)] = shard.numpy()
    return out


def per_device_bytes(plan: Iterable[layouts_lib.VariableLayout], sizes: dict) -> int:
    """Bytes each device holds for the planned variables (every device holds the same amount:
    shards are even and replication is over whole axes)."""
    total = 0
    for row in plan:
        elements = 1
        for dim, axis in zip(row.shape, row.spec):
            elements *= dim // (sizes[axis] if axis is not None else 1)
        total += elements * np.dtype(row.dtype).itemsize
    return total


def measured_device_bytes(variables: Iterable) -> list:
    """Bytes actually stored on each device by `variables` (on a mesh), from their shards."""
    totals = None
    for variable in variables:
        storage = _storage(variable) if hasattr(variable, "_value") else variable
        shards = dtensor.unpack(storage.read_value())
        sizes = [int(np.prod(s.shape)) * s.dtype.size for s in shards]
        totals = sizes if totals is None else [a + b for a, b in zip(totals, sizes)]
    return totals or []

"""Model parallelism with DTensor: a batch x model mesh, layout rules, sharded model and optimizer.

Usage (what the train tool does for --mesh=batch:2,model:4):

    mesh = make_mesh(batch=2, model=4)                # also checks update ordering (mesh.py)
    model = build the dual encoder and call it once   # unsharded, same init as one device
    plan = shard_model(model, mesh, layout_rules())   # every variable gets its rule's layout
    optimizer = keras.optimizers.AdamW(...); optimizer.build(model.trainable_variables)
    shard_optimizer(optimizer, plan, mesh)            # slots follow their variable's layout
    step = tf.function(ordinary train step)           # no tf.distribute strategy around it
    with mesh_formulations():                         # conv/pool ops DTensor can compile
        step({"images": shard_batch(images, mesh), "token_ids": shard_batch(token_ids, mesh)})

The step's seed must come from a variable inside the step (as the trainer's global step does),
not from a small integer argument: DTensor compiles a function again when such an argument
changes value. Checkpoints (tf.train.Checkpoint) of sharded variables restore into sharded or
unsharded models alike.

`mesh_formulations` is the models' switch (basic_tf/models/mesh_ops.py): the models never import
this package; the code that traces a step for a mesh turns their DTensor-compilable formulations
on. Importing this package changes nothing in the process: `make_mesh` turns off DTensor's
all-reduce combiner before the first DTensor program is compiled (with it, optimizer slots read
right after being written return stale values: the divergence
tests/parallel/test_dtensor_ordering.py catches; root cause in mesh.py).
"""
from basic_tf.models.mesh_ops import mesh_formulations
from basic_tf.parallel.dtensor.mesh import (BATCH_AXIS, MODEL_AXIS, make_mesh, mesh_sizes,
                                            parse_mesh_flag, updates_are_ordered)
from basic_tf.parallel.dtensor.layouts import (REPLICATED, Rule, VariableLayout, format_plan,
                                               layout_rules, plan_layouts)
from basic_tf.parallel.dtensor.sharding import (measured_device_bytes, per_device_bytes,
                                                plan_optimizer, replicate, shard_batch,
                                                shard_model, shard_optimizer, shard_variables,
                                                to_numpy)

__all__ = ["mesh_formulations", "BATCH_AXIS", "MODEL_AXIS", "make_mesh", "mesh_sizes",
           "parse_mesh_flag",
           "updates_are_ordered", "REPLICATED", "Rule", "VariableLayout", "format_plan",
           "layout_rules", "plan_layouts", "measured_device_bytes", "per_device_bytes",
           "plan_optimizer", "replicate", "shard_batch", "shard_model", "shard_optimizer",
           "shard_variables", "to_numpy"]

"""DTensor sharding: per-device parameter and optimizer-state bytes for each (batch, model) mesh.

Computed rows (BASIC-S/M/L, tiny, demo): the DualEncoder and its optimizer (make_optimizer as
the gin file binds it; AdaFactorW by default) are built under
keras.StatelessScope(initialize_variables=False), so no weight is allocated (the default would
initialise them all when the scope ends: 23 GiB for BASIC-L with its optimizer state), and each
variable's bytes per device follow from its layout (basic_tf.parallel.dtensor: layout_rules ->
plan_layouts / plan_optimizer -> per_device_bytes).
The parameter total is checked against basic_tf.models.dual_encoder_param_count.
Measured rows (tiny, demo): the model and optimizer are really put on a mesh of 8 virtual CPUs
in a child process, and the bytes each device holds are read from the shards
(measured_device_bytes); they must equal the computed ones. Every device holds the same amount.
"""
from benchmarks import common

CONFIGS = [("basic_s", False), ("basic_m", False), ("basic_l", False), ("tiny", True),
           ("demo", True)]
# The gin file of each: the model include with make_optimizer's defaults (AdaFactorW, float32
# momentum), as the figures were measured; the demo's experiment (AdamW).
GIN_FILES = {"basic_s": "models/basic_s", "basic_m": "models/basic_m", "basic_l": "models/basic_l",
             "tiny": "models/tiny", "demo": "demo"}
MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
GIB = 2 ** 30


def _model_and_optimizer():
    """A DualEncoder and its optimizer built from the parsed gin config, unallocated."""
    import keras

    from basic_tf import from_gin
    from basic_tf.training.optimizers import make_optimizer
    optimizer = make_optimizer()  # its counters are created here (scalars, allocated)
    # Keras (TF backend) keys slots by the variable's tensor id, which would materialise an
    # unallocated weight; the Python id is as unique here.
    optimizer._var_key = id
    with keras.StatelessScope(initialize_variables=False):
        model = from_gin.dual_encoder()
        optimizer.build(model.trainable_variables)
    return model, optimizer


def computed(gin_name: str) -> dict:
    """Per-device bytes of parameters and optimizer state for every mesh, from layouts."""
    import numpy as np

    from basic_tf import config, from_gin
    from basic_tf.models import dual_encoder_param_count
    from basic_tf.parallel import dtensor as pd
    config.parse([GIN_FILES.get(gin_name, gin_name)])
    model, optimizer = _model_and_optimizer()
    count = sum(int(np.prod(v.shape)) for v in model.variables)
    models = from_gin.model_configs()
    analytic = dual_encoder_param_count(models.dual, models.image, models.text)["total"]
    if count != analytic:
        raise AssertionError(f"{gin_name}: built variables hold {count} values but "
                             f"dual_encoder_param_count says {analytic}")
    rows = []
    for batch, model_size in MESHES:
        sizes = {"batch": batch, "model": model_size}
        plan = pd.plan_layouts(model.variables, pd.layout_rules(), sizes)
        slots = [row for _, row in pd.plan_optimizer(optimizer, plan)]
        rows.append({"mesh": [batch, model_size], "params": count,
                     "param_bytes": pd.per_device_bytes(plan, sizes),
                     "optimizer_bytes": pd.per_device_bytes(slots, sizes),
                     "optimizer": type(optimizer).__name__})
    return {"config": gin_name, "rows": rows}


def measure(cfg: dict) -> dict:
    """Child: the real sharded model and optimizer on each mesh; bytes per device from shards."""
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration() for _ in range(8)])
    from basic_tf import config, from_gin
    from basic_tf.parallel import dtensor as pd
    from basic_tf.training.optimizers import make_optimizer
    rows = []
    for batch, model_size in MESHES:
        config.parse([GIN_FILES.get(cfg["config"], cfg["config"])])
        mesh = pd.make_mesh(batch, model_size, device_type="CPU", check_ordering=False)
        model = from_gin.dual_encoder()
        plan = pd.shard_model(model, mesh, pd.layout_rules())
        optimizer = make_optimizer(model.trainable_variables)
        pd.shard_optimizer(optimizer, plan, mesh)
        params = pd.measured_device_bytes(model.variables)
        state = pd.measured_device_bytes(optimizer.variables)
        rows.append({"mesh": [batch, model_size], "param_bytes": params,
                     "optimizer_bytes": state})
    return {"config": cfg["config"], "rows": rows}


def run() -> dict:
    results = []
    for name, measured in CONFIGS:
        skipped = common.missing_gin(name, GIN_FILES[name])
        if skipped:
            results.append(skipped)
            continue
        out = computed(name)
        if measured:
            child = common.run_child("benchmarks.sharding_memory", {"config": name})
            for row, got in zip(out["rows"], child["rows"]):
                row["measured_param_bytes"] = got["param_bytes"]
                row["measured_optimizer_bytes"] = got["optimizer_bytes"]
        for r in out["rows"]:
            print(f"  {name} mesh {r['mesh']}: params {r['param_bytes'] / GIB:.3f} GiB, "
                  f"optimizer {r['optimizer_bytes'] / GIB:.3f} GiB per device", flush=True)
        results.append(out)
    return {"meshes": MESHES, "configs": results}


def _size(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def table(payload: dict) -> str:
    rows = []
    for c in payload["configs"]:
        if "skipped" in c:
            rows.append([c["config"]] + ["-"] * 6 + [f"skipped: {c['skipped']}"])
            continue
        unsharded = [r["param_bytes"] + r["optimizer_bytes"] for r in c["rows"]
                     if r["mesh"][1] == 1][0]
        for r in c["rows"]:
            measured = "-"
            if "measured_param_bytes" in r:
                same = (set(r["measured_param_bytes"]) == {r["param_bytes"]} and
                        set(r["measured_optimizer_bytes"]) == {r["optimizer_bytes"]})
                measured = ("= computed on all 8 devices" if same else
                            f"**differs**: {r['measured_param_bytes']} / "
                            f"{r['measured_optimizer_bytes']}")
            total = r["param_bytes"] + r["optimizer_bytes"]
            rows.append([c["config"], f"{r['params'] / 1e6:.1f}M",
                         f"{r['mesh'][0]}x{r['mesh'][1]}", _size(r["param_bytes"]),
                         f"{_size(r['optimizer_bytes'])} ({r['optimizer']})", _size(total),
                         f"{total / unsharded:.3f}", measured])
    return common.markdown_table(
        ["config", "parameters", "mesh batch x model", "params / device",
         "optimizer state / device", "total / device", "fraction of one device's",
         "measured (tiny, demo)"], rows)


if __name__ == "__main__":
    common.child_main(measure)

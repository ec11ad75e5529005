"""The root cause of the DTensor optimizer divergence, caught both ways.

With DTensor's all-reduce combiner on (TF's default), a variable read right after a write in the
same function returns the old value when the write's input came out of an all-reduce; Keras'
AdamW reads its moments right after writing them. TF reads the switch once per process, so the
"combiner on" case runs in a subprocess; this process runs with it off (basic_tf's default).
"""
import json
import os
import subprocess
import sys
import textwrap

from basic_tf.parallel import dtensor as pd
from basic_tf.parallel.dtensor.mesh import COMBINER_ENV

# A replicated bias under AdamW, data split on "batch": the layout that blew up in the notes.
_CHILD = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras, numpy as np, tensorflow as tf
    from tensorflow.experimental import dtensor
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(8)])
    from basic_tf.parallel import dtensor as pd

    def run(mesh):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(16, 8)), rng.normal(size=(16, 32))
        keras.utils.set_random_seed(0)
        layer = keras.layers.Dense(32, name="fc1")
        layer.build((None, 8))
        if mesh is not None:
            plan = pd.shard_variables(layer.variables, mesh, [
                pd.Rule("kernel$", (None, "model")), pd.Rule("bias$", pd.REPLICATED)])
        opt = keras.optimizers.AdamW(learning_rate=0.1)
        opt.build(layer.trainable_variables)
        if mesh is not None:
            pd.shard_optimizer(opt, plan, mesh)
            x, y = pd.shard_batch(x.astype("float32"), mesh), pd.shard_batch(y.astype("float32"), mesh)
        else:
            x, y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(layer(x) - y))
            grads = tape.gradient(loss, layer.trainable_variables)
            opt.apply_gradients(zip(grads, layer.trainable_variables))

        for _ in range(3):
            step()
        return pd.to_numpy(layer.bias)

    mesh = pd.make_mesh(2, 4, device_type="CPU", check_ordering=False)
    ordered = pd.updates_are_ordered(mesh)
    bias_error = float(np.abs(run(mesh) - run(None)).max())
    try:
        pd.make_mesh(2, 4, device_type="CPU")
        guard = "passed"
    except RuntimeError as e:
        guard = str(e)
    print(json.dumps({"ordered": ordered, "bias_error": bias_error, "guard": guard}))
""")


def _child(combiner: str) -> dict:
    env = dict(os.environ, **{COMBINER_ENV: combiner})
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          env=env, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_combiner_on_reads_stale_slots_and_the_guard_says_so():
    out = _child("1")
    assert out["ordered"] is False
    assert out["bias_error"] > 0.05, out  # AdamW on a replicated bias diverges
    assert COMBINER_ENV in out["guard"]


def test_this_process_runs_with_the_combiner_off():
    mesh = pd.make_mesh(2, 4, device_type="CPU")  # raises if the probe sees a stale read
    assert os.environ[COMBINER_ENV] == "0"  # set by the process's first make_mesh
    assert pd.updates_are_ordered(mesh)
    assert pd.mesh_sizes(mesh) == {"batch": 2, "model": 4}


def test_parse_mesh_flag():
    assert pd.parse_mesh_flag("batch:2,model:4") == {"batch": 2, "model": 4}
    assert pd.parse_mesh_flag("model:8") == {"batch": 1, "model": 8}
    for bad in ("batch=2", "batch:0", "data:2", "batch:2,batch:2", ""):
        try:
            pd.parse_mesh_flag(bad)
        except ValueError as e:
            assert "batch:2,model:4" in str(e)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    try:
        pd.make_mesh(4, 4, device_type="CPU")
    except ValueError as e:
        assert "needs 16 CPU devices but 8" in str(e)
    else:
        raise AssertionError("a 16-device mesh was made from 8 devices")

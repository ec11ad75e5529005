"""A DTensor mesh and basic_tf's MirroredStrategy in one process: their collectives keep apart.

Before: a plain MirroredStrategy numbered its collective groups from 1 like DTensor, and its
first all-reduce after a DTensor collective aborted ("joining a group with size 2, but that
group has size 4 (group_key=1)"). Runs in a child process: the abort poisons the process."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    from tensorflow.experimental import dtensor
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(8)])
    from basic_tf.parallel import dtensor as pd
    from basic_tf.parallel.strategy import make_strategy

    mesh = pd.make_mesh(batch=4, model=2, device_type="CPU")
    x = dtensor.call_with_layout(tf.ones, dtensor.Layout(["batch", dtensor.UNSHARDED], mesh),
                                 shape=[8, 4])
    assert float(tf.reduce_sum(x)) == 32.0  # a DTensor all-reduce over 4 devices
    strategy = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]) is strategy

    @tf.function
    def total():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            "sum", tf.constant(1.0)))
    print("sum", float(strategy.experimental_local_results(total())[0]))
""")


def test_dtensor_mesh_then_mirrored_strategy_in_one_process():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sum 2.0" in out.stdout

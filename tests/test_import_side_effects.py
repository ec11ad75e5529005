"""Importing basic_tf changes nothing in the process; the first DTensor mesh sets what DTensor needs.

Before: models/coatnet.py imported parallel/dtensor/ops, whose package set
DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION at import, so `import basic_tf.models` changed
the environment and loaded the DTensor room. A fresh child process, since this one has long
imported everything; its third-party imports (TensorFlow sets variables of its own) come first.
"""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHILD = textwrap.dedent("""
    import importlib, json, os, pkgutil, sys
    import gin, keras, numpy, tensorflow as tf
    before = dict(os.environ)

    def changed():
        return sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))

    out = {}
    import basic_tf.models
    out["models"] = {"changed": changed(),
                     "dtensor_loaded": "basic_tf.parallel.dtensor" in sys.modules}
    import basic_tf
    for module in pkgutil.walk_packages(basic_tf.__path__, "basic_tf."):
        if module.name != "basic_tf.cli":  # the tools' start-up: quiets TF before it loads
            importlib.import_module(module.name)
    out["everything"] = changed()
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from basic_tf.parallel import dtensor as pd
    assert pd.to_numpy(tf.Variable([1.0, 2.0])).tolist() == [1.0, 2.0]  # must not start DTensor
    pd.make_mesh(batch=2, device_type="CPU")  # raises if the combiner were still on
    out["after_make_mesh"] = {k: os.environ.get(k) for k in changed()}
    print(json.dumps(out))
""")


def test_imports_leave_the_process_alone_and_make_mesh_turns_the_combiner_off():
    from basic_tf.parallel.dtensor.mesh import COMBINER_ENV
    env = {k: v for k, v in os.environ.items() if k not in (COMBINER_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=dict(env, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["models"] == {"changed": [], "dtensor_loaded": False}
    assert out["everything"] == []
    assert out["after_make_mesh"] == {COMBINER_ENV: "0"}

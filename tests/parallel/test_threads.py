"""cpu_threads gin bindings: applied by the tools' gin parsing before TensorFlow's runtime starts,
refused (naming the binding and value) when invalid or too late."""
import subprocess
import sys

import pytest
import tensorflow as tf

from basic_tf.parallel.threads import apply_cpu_threads


def test_cpu_threads_bindings_size_the_pools_and_bad_or_late_values_are_named():
    code = ("from absl import flags; from basic_tf import cli; fv = flags.FlagValues(); "
            "cli.define_gin_flags(flag_values=fv); fv(['x', '--gin_file=models/tiny', "
            "'--gin_bindings=cpu_threads.intra_op = 1', "
            "'--gin_bindings=cpu_threads.inter_op = 3']); "
            "cli.parse_gin_flags(fv); import tensorflow as tf; float(tf.constant(1.0) + 1); "
            "t = tf.config.threading; "
            "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "3"]
    float(tf.constant(1.0))  # this process's runtime has started
    with pytest.raises(ValueError, match=r"^cpu_threads.intra_op = 7: set too late"):
        apply_cpu_threads(intra_op=7)
    with pytest.raises(ValueError, match=r"^cpu_threads.inter_op = -1: give a positive"):
        apply_cpu_threads(inter_op=-1)

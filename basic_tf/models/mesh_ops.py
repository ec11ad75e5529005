"""Convolution and pooling formulations DTensor (TF 2.20) can compile, behind a switch.

The models know nothing of meshes: the CoAtNet tower calls `depthwise`, `avg_pool2d` and
`max_pool2d` from here, the ViT tower `patch_embedding`, and outside `mesh_formulations()` these
are the native ops. The sharding code (basic_tf.parallel.dtensor, re-exported there as
`mesh_formulations`) traces its steps inside the switch; then they are built from slices,
concats, multiplies, matmuls and maxima, because DTensor has no layout propagation for the
native ops' gradients:
- DepthwiseConv2dNativeBackpropFilter ("op does not implement layout propagation"), whatever the
  kernel's layout; a grouped tf.nn.conv2d gives a wrong filter gradient ("filter_size does not
  have enough elements") that poisons the eager executor. The 'SAME' convolution is computed as
  a sum of k*k shifted, channel-scaled copies of the input; DTensor expands it with channels
  split over "model".
- AvgPoolGrad and MaxPoolGrad: the mean / maximum of the shifted copies instead ('SAME'
  semantics: padding is excluded from the mean and never wins the max). Ties in max pooling send
  the gradient to the tap tf.maximum picks rather than MaxPoolGrad's, which changes nothing for
  real-valued activations but is not bit-identical to tf.nn.max_pool2d's gradient on ties.
- The ViT patch embedding (Conv2D, kernel = strides): a matmul over flattened patches.
Values equal the native ops' (tests/models/test_mesh_ops.py). Also: a leading new axis
`t[None]` fails DTensor's layout propagation or crashes the process (segfault in
slice_util::ForwardLayoutInference::VisitImplicitAxis), so the models write tf.expand_dims(t, 0).
"""
import math

import numpy as np
import tensorflow as tf

from basic_tf.trace_flag import TraceFlag

_MESH_FORMULATIONS = TraceFlag()


def mesh_formulations():
    """Inside (read at trace time), `depthwise`, the pools and `patch_embedding` use the
    DTensor-compilable formulations. Entered by the code that traces steps for a mesh."""
    return _MESH_FORMULATIONS.on()


def mesh_formulations_enabled() -> bool:
    return _MESH_FORMULATIONS.is_on()


def _shift(x: tf.Tensor, offset: int, axis: int, fill: float = 0.0) -> tf.Tensor:
    """y[i] = x[i + offset] along `axis`, `fill` where i + offset is out of range."""
    if offset == 0:
        return x
    size = x.shape[axis]
    n = min(abs(offset), size)

    def take(start, stop):
        index = [slice(None)] * x.shape.rank
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    pad = tf.zeros_like(take(0, n))
    if fill:
        pad += tf.cast(fill, x.dtype)
    if offset > 0:
        return tf.concat([take(n, size), pad], axis=axis)
    return tf.concat([pad, take(0, size - n)], axis=axis)


def _same_offsets(size: int, kernel: int, stride: int) -> list:
    """Input offsets of the kernel taps for TF's 'SAME' padding (more padding after than before)."""
    out = math.ceil(size / stride)
    pad_total = max((out - 1) * stride + kernel - size, 0)
    return [tap - pad_total // 2 for tap in range(kernel)]


def _valid_taps(size: int, kernel: int, stride: int) -> np.ndarray:
    """Per output position along one axis, how many kernel taps fall inside the input."""
    offsets = _same_offsets(size, kernel, stride)
    starts = np.arange(math.ceil(size / stride)) * stride
    return np.array([sum(0 <= p + o < size for o in offsets) for p in starts], np.float64)


def _taps(x: tf.Tensor, kernel_size: int, stride: int, fill: float = 0.0):
    """Yields (i, j, tap) for every kernel position: tap [B, ceil(H/s), ceil(W/s), C] is the
    input value under that kernel position for each output pixel ('SAME' padding = `fill`)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    for i, dh in enumerate(_same_offsets(h, kernel_size, stride)):
        rows = _shift(x, dh, axis=1, fill=fill)[:, ::stride]
        for j, dw in enumerate(_same_offsets(w, kernel_size, stride)):
            yield i, j, _shift(rows, dw, axis=2, fill=fill)[:, :, ::stride]


def shifted_depthwise_conv2d(x: tf.Tensor, kernel: tf.Tensor, stride: int = 1) -> tf.Tensor:
    """'SAME' depthwise convolution, equal to tf.nn.depthwise_conv2d(x, kernel, [1,s,s,1], 'SAME').

    x: [B, H, W, C] with static H, W; kernel: [kh, kw, C, 1] (depth multiplier 1).
    Returns [B, ceil(H/s), ceil(W/s), C]. Memory: one shifted copy per kernel row at a time.
    """
    if kernel.shape[-1] != 1:
        raise ValueError(f"depthwise_conv2d supports depth multiplier 1, got kernel shape "
                         f"{kernel.shape}")
    if kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"depthwise_conv2d supports square kernels, got {kernel.shape}")
    out = None
    for i, j, tap in _taps(x, int(kernel.shape[0]), stride):
        term = tap * kernel[i, j, :, 0]
        out = term if out is None else out + term
    return out


def shifted_avg_pool2d(x: tf.Tensor, pool_size: int, stride: int) -> tf.Tensor:
    """= tf.nn.avg_pool2d(x, pool_size, stride, 'SAME'): x [B, H, W, C] (static H, W)."""
    total = None
    for _, _, tap in _taps(x, pool_size, stride):
        total = tap if total is None else total + tap
    counts = [_valid_taps(int(n), pool_size, stride) for n in x.shape[1:3]]
    count = np.outer(counts[0], counts[1]).reshape(1, len(counts[0]), len(counts[1]), 1)
    return total / tf.constant(count, x.dtype)


def shifted_max_pool2d(x: tf.Tensor, pool_size: int, stride: int) -> tf.Tensor:
    """= tf.nn.max_pool2d(x, pool_size, stride, 'SAME'): x [B, H, W, C] float (static H, W)."""
    lowest = float(x.dtype.min)
    out = None
    for _, _, tap in _taps(x, pool_size, stride, fill=lowest):
        out = tap if out is None else tf.maximum(out, tap)
    return out


def depthwise(layer, x: tf.Tensor) -> tf.Tensor:
    """`layer(x)` for a keras DepthwiseConv2D ('same', no bias, depth multiplier 1, no
    activation), or its shifted formulation inside mesh_formulations()."""
    if not mesh_formulations_enabled():
        return layer(x)
    if (layer.padding != "same" or layer.use_bias or layer.depth_multiplier != 1
            or layer.strides[0] != layer.strides[1] or layer.activation.__name__ != "linear"):
        raise ValueError(f"DepthwiseConv2D {layer.name}: the mesh formulation supports padding "
                         "'same', no bias, depth_multiplier 1, equal strides and no activation")
    kernel = tf.cast(layer.kernel, layer.compute_dtype)
    return shifted_depthwise_conv2d(tf.cast(x, layer.compute_dtype), kernel, layer.strides[0])


def avg_pool2d(x: tf.Tensor, pool_size: int, stride: int) -> tf.Tensor:
    """tf.nn.avg_pool2d(x, pool_size, stride, 'SAME'), or its shifted formulation."""
    if not mesh_formulations_enabled():
        return tf.nn.avg_pool2d(x, pool_size, stride, "SAME")
    return shifted_avg_pool2d(x, pool_size, stride)


def max_pool2d(x: tf.Tensor, pool_size: int, stride: int) -> tf.Tensor:
    """tf.nn.max_pool2d(x, pool_size, stride, 'SAME'), or its shifted formulation."""
    if not mesh_formulations_enabled():
        return tf.nn.max_pool2d(x, pool_size, stride, "SAME")
    return shifted_max_pool2d(x, pool_size, stride)


def patches_matmul(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """= tf.nn.conv2d(x, kernel, strides=kernel size, 'VALID'): non-overlapping patches, each
    flattened and multiplied by the flattened kernel.

    x: [B, H, W, C] with static H, W divisible by the kernel's; kernel: [ph, pw, C, F].
    Returns [B, H/ph, W/pw, F].
    """
    ph, pw, c, filters = (int(d) for d in kernel.shape)
    h, w = int(x.shape[1]), int(x.shape[2])
    if h % ph or w % pw or int(x.shape[3]) != c:
        raise ValueError(f"patches_matmul: input {x.shape} does not tile into {ph}x{pw}x{c} "
                         f"patches")
    patches = tf.reshape(x, [-1, h // ph, ph, w // pw, pw, c])
    patches = tf.reshape(tf.transpose(patches, [0, 1, 3, 2, 4, 5]),
                         [-1, h // ph, w // pw, ph * pw * c])
    return tf.einsum("bijk,kf->bijf", patches, tf.reshape(kernel, [ph * pw * c, filters]))


def patch_embedding(layer, x: tf.Tensor) -> tf.Tensor:
    """`layer(x)` for a keras Conv2D that cuts non-overlapping patches (kernel = strides, 'valid'
    padding; ViT's patch embedding), or inside mesh_formulations() the same as a matmul over
    flattened patches: DTensor's Conv2D expansion ignores a model-sharded output layout ("op
    output inconsistent with the provided layout") and its Conv2DBackpropFilter rejects this
    convolution even on a batch-only mesh ("only supports batch parallel layouts")."""
    if not mesh_formulations_enabled():
        return layer(x)
    if (layer.padding != "valid" or tuple(layer.kernel_size) != tuple(layer.strides)
            or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1
            or layer.data_format != "channels_last" or layer.activation.__name__ != "linear"):
        raise ValueError(f"Conv2D {layer.name}: the mesh formulation supports patch embeddings "
                         "only: kernel_size = strides, padding 'valid', no dilation or groups, "
                         "channels_last, no activation")
    y = patches_matmul(tf.cast(x, layer.compute_dtype), tf.cast(layer.kernel, layer.compute_dtype))
    return y if not layer.use_bias else y + tf.cast(layer.bias, layer.compute_dtype)

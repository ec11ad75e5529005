"""Contrastive loss sums over column blocks: the exact loss in O(n x C) memory, not n x N.

The unchunked losses (losses.py) build the [n, N] logits of n rows against the N columns of the
global batch, and their gradients keep it: at BASIC's N = 65,536 the float32 logits alone are
16 GiB. Here the columns are visited in blocks of C: the forward pass streams what the loss
needs (each row's log-sum-exp as a running max and sum of exponentials, each column block's
log-sum-exp over all rows) and keeps only [n] and [N] statistics; the softmax's backward pass
(tf.custom_gradient, written by hand) recomputes each [n, C] block of logits from the embeddings
and adds its share of the gradients. The sigmoid loss needs no statistic of the other blocks, so
its one sweep sums the loss and the gradients together. Peak memory is O(n C + N D). Work: the
softmax recomputes one logits matmul, but over the whole batch reads both directions from the
same block (the t2i logits are the i2t ones transposed): 4 block matmuls per block against
autodiff's 6; the sigmoid does autodiff's 3.

Exactness: the same sums as the unchunked loss, in another order (block-wise log-sum-exp, block
matmuls): equal to float32 rounding. C must divide the number of columns N (a last partial block
would need masking for little use: batches are powers of two); otherwise an error names
loss_chunk and N.

Every function here returns a float32 scalar SUM over the given rows (the caller divides by N);
x: float32 [n, D] rows, y: float32 [N, D] columns, scale/bias float32 scalars.
"""
import tensorflow as tf


def check_chunk(chunk: int, num_columns) -> None:
    """Raises ValueError unless chunk is an integer >= 1 dividing num_columns (an int, or None
    when unknown until run time)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"loss_chunk={chunk!r} must be an integer >= 1 (0 turns chunking off)")
    if num_columns is not None and num_columns % chunk:
        raise ValueError(f"loss_chunk={chunk} does not divide the global batch of {num_columns} "
                         f"pairs; use a divisor of {num_columns}")


def _column_blocks(y: tf.Tensor, chunk: int) -> tf.Tensor:
    """[N, D] -> [N / C, C, D] (C divides N; checked statically when N is known)."""
    check_chunk(chunk, y.shape[0])
    return tf.reshape(y, [-1, chunk, tf.shape(y)[-1]])


def _write_block(blocks: tf.Tensor, j: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """blocks [B, C, ...] with blocks[j] = value (a while-loop variable written in place; XLA
    compiles it, as accumulation.py's embedding cache)."""
    return tf.tensor_scatter_nd_update(blocks, [[j]], value[tf.newaxis])


def _for_blocks(num_blocks, body, init):
    """tf.while_loop over column blocks j = 0..B-1, one at a time (parallel_iterations=1, so
    the executor never holds two blocks' logits)."""
    return tf.while_loop(lambda j, *_: j < num_blocks, body, (tf.constant(0),) + tuple(init),
                         parallel_iterations=1)[1:]


def _scaled_grads(upstream, scale, x, dx, dblocks, y_shape) -> tuple:
    """(d x, d y, d scale) of a sum over logits z = scale x y^T, from dx = sum_j dL/dz_ij y_j
    [n, D] and dblocks [B, C, D] = sum_i dL/dz_ij x_i (the scale not yet applied):
    d scale = sum_ij dL/dz_ij x_i.y_j = sum(x * dx), an [n, D] product instead of one per
    [n, C] block."""
    factor = upstream * scale
    return (factor * dx, factor * tf.reshape(dblocks, y_shape),
            upstream * tf.reduce_sum(x * dx))


def softmax_lse_sum(x: tf.Tensor, y: tf.Tensor, scale: tf.Tensor, chunk: int,
                    columns_too: bool) -> tf.Tensor:
    """sum_i logsumexp_j(scale x_i.y_j), plus sum_j logsumexp_i(scale x_i.y_j) when
    columns_too (x then holds ALL rows: the loss's other direction over the same matrix).

    The softmax cross-entropy is this minus the positive logits (the caller's, by autodiff).
    Backward: d/dz of a row log-sum-exp is the row's softmax, recomputed per block from the
    saved [n] row (and [N] column) log-sum-exps.
    """

    @tf.custom_gradient
    def lse_sum(x, y, scale):
        blocks = _column_blocks(y, chunk)
        num_blocks = tf.shape(blocks)[0]
        n = tf.shape(x)[0]
        scaled = scale * x  # [n, D]: the scale folded in once, not into every [n, C] block

        def forward(j, row_max, row_sum, col_lse):
            z = tf.matmul(scaled, blocks[j], transpose_b=True)  # [n, C]
            new_max = tf.maximum(row_max, tf.reduce_max(z, axis=1))
            row_sum = (row_sum * tf.exp(row_max - new_max)
                       + tf.reduce_sum(tf.exp(z - new_max[:, tf.newaxis]), axis=1))
            if columns_too:
                col_lse = _write_block(col_lse, j, tf.reduce_logsumexp(z, axis=0))
            return j + 1, new_max, row_sum, col_lse

        col_init = tf.zeros([num_blocks, chunk] if columns_too else [0, chunk])
        row_max, row_sum, col_lse = _for_blocks(
            num_blocks, forward, (tf.fill([n], -float("inf")), tf.zeros([n]), col_init))
        row_lse = row_max + tf.math.log(row_sum)
        total = tf.reduce_sum(row_lse)
        if columns_too:
            total += tf.reduce_sum(col_lse)

        def grad(upstream):
            def backward(j, dx, dblocks):
                z = tf.matmul(scaled, blocks[j], transpose_b=True)  # [n, C]
                g = tf.exp(z - row_lse[:, tf.newaxis])  # d lse / dz
                if columns_too:
                    g += tf.exp(z - col_lse[j][tf.newaxis, :])
                dx += tf.matmul(g, blocks[j])
                return j + 1, dx, _write_block(dblocks, j, tf.matmul(g, x, transpose_a=True))

            dx, dblocks = _for_blocks(num_blocks, backward,
                                      (tf.zeros_like(x), tf.zeros_like(blocks)))
            return _scaled_grads(upstream, scale, x, dx, dblocks, tf.shape(y))

        return total, grad

    return lse_sum(x, y, scale)


def sigmoid_sum(x: tf.Tensor, y: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor, chunk: int,
                row_offset) -> tf.Tensor:
    """sum_ij -log sigmoid(s_ij (scale x_i.y_j + bias)), s_ij = +1 where j = i + row_offset
    (the pair), -1 elsewhere: the SigLIP loss's sum over these rows.

    Written as softplus(-s_ij z_ij), the op tf.math.log_sigmoid computes, so each term equals
    the unchunked loss's; dz = -s_ij sigmoid(-s_ij z_ij). A block's gradient needs nothing of the
    other blocks, so the same sweep that sums the loss also sums the gradients (three block
    matmuls, as autodiff's forward + backward; none recomputed) and the backward pass only
    scales them: O(N D) kept, and a value-only call (evaluation) pays for the gradients too.
    """
    n = tf.shape(x)[0]
    rows = tf.range(n) + tf.cast(row_offset, tf.int32)

    def pairs(j):
        """[n, C] bool: where block j holds a row's own pair."""
        return tf.equal(rows[:, tf.newaxis], j * chunk + tf.range(chunk)[tf.newaxis, :])

    @tf.custom_gradient
    def total(x, y, scale, bias):
        blocks = _column_blocks(y, chunk)
        scaled = scale * x  # [n, D]: the scale folded in once, not into every [n, C] block

        def sweep(j, value, dx, dblocks, dbias):
            z = tf.matmul(scaled, blocks[j], transpose_b=True) + bias  # [n, C]
            positive = pairs(j)
            t = tf.where(positive, -z, z)  # -s_ij z_ij
            sig = tf.math.sigmoid(t)
            dz = tf.where(positive, -sig, sig)  # d softplus(t) / dz
            dx += tf.matmul(dz, blocks[j])
            dblocks = _write_block(dblocks, j, tf.matmul(dz, x, transpose_a=True))
            return (j + 1, value + tf.reduce_sum(tf.math.softplus(t)), dx, dblocks,
                    dbias + tf.reduce_sum(dz))

        value, dx, dblocks, dbias = _for_blocks(
            tf.shape(blocks)[0], sweep,
            (tf.zeros([]), tf.zeros_like(x), tf.zeros_like(blocks), tf.zeros([])))

        def grad(upstream):
            return _scaled_grads(upstream, scale, x, dx, dblocks, tf.shape(y)) + (
                upstream * dbias,)

        return value, grad

    return total(x, y, scale, bias)


def in_batch_hits(x: tf.Tensor, y: tf.Tensor, chunk: int) -> tuple:
    """losses.in_batch_accuracy's counts over column blocks of C: (rows i whose pair y_i has
    x_i's largest similarity, columns j whose pair x_j has y_j's largest), float32 scalars;
    x, y: [n, D] pairs, C divides n. O(n C) memory, not the [n, n] similarities.

    A pair's similarity and the maxima it is compared with come from the same block matmul (a
    column's maximum is complete within its block), so ties count as in the unchunked metric.
    """
    blocks = _column_blocks(y, chunk)
    rows = tf.range(tf.shape(x)[0])

    def body(j, row_max, paired, column_hits):
        sims = tf.matmul(x, blocks[j], transpose_b=True)  # [n, C]
        mine = tf.equal(rows[:, tf.newaxis], j * chunk + tf.range(chunk)[tf.newaxis, :])
        on_pairs = tf.where(mine, sims, tf.zeros_like(sims))
        column_paired = tf.reduce_sum(on_pairs, axis=0)  # [C]: x_j . y_j of this block's j
        column_hits += tf.reduce_sum(tf.cast(column_paired >= tf.reduce_max(sims, axis=0),
                                             tf.float32))
        return (j + 1, tf.maximum(row_max, tf.reduce_max(sims, axis=1)),
                paired + tf.reduce_sum(on_pairs, axis=1), column_hits)

    n = tf.shape(x)[0]
    row_max, paired, column_hits = _for_blocks(
        tf.shape(blocks)[0], body, (tf.fill([n], -float("inf")), tf.zeros([n]), tf.zeros([])))
    return tf.reduce_sum(tf.cast(paired >= row_max, tf.float32)), column_hits

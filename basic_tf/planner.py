"""Analytic planner for a BASIC training step: parameters, FLOPs, memory, and a recommendation.

Given an experiment's models (basic_tf.models.ModelConfigs), a global contrastive batch, the device mesh (data replicas
x model shards) and the memory of one device, it reports per tower: parameters (from
`basic_tf.models.param_count`, the one parameter formula), forward FLOPs per example and the
activation memory kept for back-propagation per example with and without recompute (both
enumerated layer by layer from the tower configs here, without building anything); then the
per-device memory of a step (weights, optimizer state, gradients, activations of one micro-batch,
embeddings, the N x N logits or, with train.loss_chunk = C, N x C blocks of them, inputs, runtime
overhead) and recommends the number of micro-batches, the loss chunk, the remat policy and the
mesh.

Activation accounting (float32 elements kept alive for the backward pass, per example), from
what TensorFlow's gradient of each op reads: a Dense/einsum keeps its inputs, LayerNorm/BatchNorm
keep their input, softmax its output, max-pool its input and output, exact GELU three tensors of
its input's size (0.5x, x/sqrt2 and 1+erf(.)), additions, reshapes, pooling means and biases
nothing. So a pre-LN Transformer block over n tokens (input width c, width w, MLP m, h heads)
keeps n (2c + 6w + 4m) + h n^2, and a CoAtNet MBConv block (expansion e = 4 w, stride s) keeps
HW (2c + 5e) + (HW/s^2) 6e. Dropout masks (rate > 0) are not counted.
FLOPs count a multiply-add as 2; a training step costs 3 forward passes (forward + backward),
plus one more forward of every block under remat and one more of everything with BASIC's
accumulation (M > 1: an embedding pass without tape, then a taped pass per micro-batch).
"""
import dataclasses


MB = 2 ** 20
# What the chunked loss (chunked_loss.py) holds at once besides the embeddings and their
# gradients: [rows, C] float32 blocks (the logits, their exponentials, the gradient block, the
# loop's copies) and [N, D] buffers (the scaled rows, the column gradient being written).
# benchmarks/loss_memory.py measured 1,930 MB above the embeddings at N = 65,536, C = 512,
# D = 512 (softmax; 2026-12-07), i.e. 15 buffers of 128 MiB counting the gradients' two:
# 6 blocks + 3 [N, D] + the 2 gradients + ~4 of runtime and allocator slack.
LOSS_CHUNK_BLOCKS = 6
LOSS_CHUNK_ROW_BUFFERS = 3
# Chunks tried, largest first: the largest that fits keeps the block matmuls big.
LOSS_CHUNKS = (8192, 4096, 2048, 1024, 512, 256, 128)
OPTIMIZER_SLOTS = {"adamw": 2.0, "adafactor": 0.0, "adafactor_momentum": 1.0, "sgd": 0.0}


@dataclasses.dataclass
class Block:
    """One remat-wrappable block, per example: forward FLOPs and the elements kept for backward
    (`input`: its input, all that remat keeps; `largest`: its largest activation)."""
    flops: float
    saved: float
    input: float
    largest: float


@dataclasses.dataclass
class TowerCost:
    """A tower's analytic cost per example (with its projection to the embedding)."""
    name: str
    blocks: list
    outside_flops: float    # stem / patch embedding / pooling / projection
    outside_saved: float    # saved elements outside the blocks (never recomputed)

    @property
    def flops(self) -> float:
        return self.outside_flops + sum(b.flops for b in self.blocks)

    def saved(self, remat_every: int = 0) -> float:
        """Saved elements per example; remat_every k > 0 recomputes blocks 0, k, 2k, ...: those
        keep only their input, plus the largest one's activations while it is recomputed."""
        if remat_every <= 0:
            return self.outside_saved + sum(b.saved for b in self.blocks)
        wrapped = [i % remat_every == 0 for i in range(len(self.blocks))]
        kept = sum(b.input if w else b.saved for b, w in zip(self.blocks, wrapped))
        peak = max([b.saved for b, w in zip(self.blocks, wrapped) if w] or [0.0])
        return self.outside_saved + kept + peak

    @property
    def largest(self) -> float:
        return max([b.largest for b in self.blocks] or [0.0])


def transformer_block(n: int, c: int, w: int, heads: int, mlp: int) -> Block:
    """Pre-LN attention + MLP block over n tokens, input width c, width w (c != w: a projected
    shortcut, as at a CoAtNet stage entry)."""
    flops = 2 * n * (3 * c * w + w * w + 2 * w * mlp) + 4 * n * n * w
    if c != w:
        flops += 2 * n * c * w
    saved = n * (2 * c + 6 * w + 4 * mlp) + heads * n * n
    return Block(flops, saved, n * c, max(heads * n * n, n * mlp))


def mbconv_block(spec, expansion: int, se_ratio: float) -> Block:
    """CoAtNet MBConv (pre-norm BN, 1x1 expand, depthwise 3x3, SE, 1x1) of a
    `coatnet.BlockSpec`: an h x w x c map in, h2 x w2 x width out."""
    (h, w), (h2, w2), c, width = spec.in_size, spec.size, spec.in_width, spec.width
    e = width * expansion
    se = max(1, int(c * se_ratio))
    flops = 2 * h * w * c * e + 2 * 9 * e * h2 * w2 + 4 * e * se + 2 * h2 * w2 * e * width
    saved = h * w * (2 * c + 5 * e) + h2 * w2 * 6 * e
    if spec.stride > 1 or c != width:
        flops += 2 * h2 * w2 * c * width
        saved += h2 * w2 * c
    return Block(flops, saved, h * w * c, max(h * w * e, h2 * w2 * e))


def coatnet_cost(config, image_size: int, embed_dim: int, num_classes: int = 0) -> TowerCost:
    """CoAtNet tower (basic_tf.models.coatnet layout) on image_size^2 images, projected to
    embed_dim (or, as the paper counts FLOPs, a num_classes-way classification head)."""
    from basic_tf.models.coatnet import block_specs  # the one walk over the stages

    specs = block_specs(config, image_size)
    s = config.stem_width
    h, w = specs[0].in_size
    outside_flops = 2 * 9 * 3 * s * h * w + 2 * 9 * s * s * h * w
    outside_saved = image_size * image_size * 3 + 5 * s * h * w
    blocks = []
    for spec in specs:
        if spec.kind == "C":
            blocks.append(mbconv_block(spec, config.expansion, config.se_ratio))
        else:
            (h, w), (h2, w2), c, width = spec.in_size, spec.size, spec.in_width, spec.width
            b = transformer_block(h2 * w2, c, width, width // config.head_dim,
                                  config.mlp_ratio * width)
            if spec.stride > 1:  # max-pool 3x3 keeps its input (and its output, the LN input)
                b = Block(b.flops + 9 * h2 * w2 * c, b.saved + h * w * c, h * w * c,
                          max(b.largest, h * w * c))
            blocks.append(b)
    c = config.width
    outside_flops += 2 * c * (num_classes or embed_dim)
    outside_saved += 2 * c
    return TowerCost("image (CoAtNet)", blocks, outside_flops, outside_saved)


def vit_cost(config, image_size: int, embed_dim: int) -> TowerCost:
    p, w = config.patch_size, config.width
    n = (image_size // p) ** 2 + (1 if config.pooling == "cls" else 0)
    blocks = [transformer_block(n, w, w, config.num_heads, config.mlp_dim)
              for _ in range(config.depth)]
    outside_flops = 2 * (n * p * p * 3 * w + w * embed_dim)
    outside_saved = image_size * image_size * 3 + n * w + w
    return TowerCost("image (ViT)", blocks, outside_flops, outside_saved)


def text_cost(config, embed_dim: int) -> TowerCost:
    cls = 1 if config.pooling == "cls" else 0
    n, w = config.max_len + cls, config.width
    blocks = [transformer_block(n, w, w, config.num_heads, config.mlp_dim)
              for _ in range(config.depth)]
    return TowerCost("text", blocks, 2 * w * embed_dim, n * w + w)


def tower_costs(model_config):
    """(image TowerCost, text TowerCost, parameter counts {'image', 'text', 'head', 'total'})
    for an experiment's models (basic_tf.models.ModelConfigs)."""
    from basic_tf.models.param_count import dual_encoder_param_count
    dual, image, text = model_config.dual, model_config.image, model_config.text
    d = dual.embed_dim
    if dual.image_tower == "coatnet":
        img = coatnet_cost(image, dual.image_size, d)
    else:
        img = vit_cost(image, dual.image_size, d)
    return img, text_cost(text, d), dual_encoder_param_count(dual, image, text)


@dataclasses.dataclass
class Plan:
    """Per-device memory (bytes) and FLOPs of one training step under one setting."""
    global_batch: int
    data_replicas: int
    model_shards: int
    num_micro_batches: int
    remat_every: int            # 0: no recompute; k: blocks 0, k, 2k, ... recomputed
    loss_chunk: int             # 0: the whole logits; C: blocks of C columns (chunked_loss.py)
    params: dict                # tower -> parameter count
    flops_per_example: dict     # tower -> forward FLOPs per example
    memory: dict                # component -> bytes per device
    model_flops: float          # useful FLOPs of the step, all devices (MFU numerator)
    hardware_flops: float       # including recomputation

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.data_replicas

    @property
    def micro_batch(self) -> int:
        return self.local_batch // self.num_micro_batches

    @property
    def peak_bytes(self) -> float:
        return sum(self.memory.values())

    @property
    def step_bytes(self) -> float:
        """What the step adds on top of the state that exists before it runs (weights, optimizer
        state, the input batch): the quantity a per-process peak-RSS measurement sees."""
        return sum(v for k, v in self.memory.items()
                   if k not in ("weights", "optimizer state", "inputs"))


def plan_step(model_config, global_batch: int, data_replicas: int = 1, model_shards: int = 1,
              num_micro_batches: int = 1, remat_every: int = 0, loss_chunk: int = 0,
              optimizer: str = "adamw",
              activation_bytes: int = 4, runtime_overhead_mb: float = 100.0,
              accumulation_overhead_mb: float = 50.0) -> Plan:
    """Memory and FLOPs of one step.

    runtime_overhead_mb: what the framework itself allocates during the first step (graph
    tracing, optimisation, executor state); measured for TensorFlow 2.20 on CPU by
    benchmarks/planner_memory.py (its batch-2 rows). accumulation_overhead_mb: what BASIC's
    accumulation (M > 1) adds to that: its two passes are while-loop bodies, i.e. two more
    functions (a forward, and a forward + backward) that TensorFlow traces, optimises and
    instantiates beside the step; a constant, not a per-example cost (tiny.gin, 2026-11-29:
    +52 MB at batch 8, +54 MB at batches 256 and 1024 with 4 micro-batches, +40 MB at 1024 with
    16). activation_bytes: 4 (float32) or 2 (bfloat16 compute).
    loss_chunk: 0: the loss's logits are 4 float32 copies of [local, global] (the logits, their
    softmax and the gradient of each direction); C: LOSS_CHUNK_BLOCKS blocks [local, C] and
    LOSS_CHUNK_ROW_BUFFERS [global, D], and the recomputed logits add 2 N^2 D executed FLOPs.
    Model-sharded tensors (weights, optimizer state, gradients, activations) divide by
    model_shards; activations that tensor parallelism replicates (LayerNorm inputs) are not
    modelled separately.
    """
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"plan_step.optimizer={optimizer!r} is not one of "
                         f"{sorted(OPTIMIZER_SLOTS)}")
    if global_batch % data_replicas:
        raise ValueError(f"global batch {global_batch} is not divisible by {data_replicas} "
                         f"data replicas")
    local = global_batch // data_replicas
    if local % num_micro_batches:
        raise ValueError(f"per-replica batch {local} is not divisible by num_micro_batches="
                         f"{num_micro_batches}")
    if loss_chunk and global_batch % loss_chunk:
        raise ValueError(f"train.loss_chunk={loss_chunk} does not divide the global batch of "
                         f"{global_batch}")
    img, txt, counts = tower_costs(model_config)
    dual, seq = model_config.dual, model_config.text.max_len
    d = dual.embed_dim
    params = counts["total"]
    micro = local // num_micro_batches
    shard = float(model_shards)
    accumulate = num_micro_batches > 1
    memory = {
        "weights": 4 * params / shard,
        "optimizer state": 4 * OPTIMIZER_SLOTS[optimizer] * params / shard,
        "inputs": local * (4 * dual.image_size ** 2 * 3 + 4 * seq),
        "gradients": 4 * params / shard * (2 if accumulate else 1),
        "activations": activation_bytes * micro * (img.saved(remat_every)
                                                   + txt.saved(remat_every)) / shard,
        "workspace": 2 * activation_bytes * micro * max(img.largest, txt.largest) / shard,
        "embeddings": 4 * local * d * 2 * (2 if accumulate else 1),
        "logits": (4 * (LOSS_CHUNK_BLOCKS * local * loss_chunk
                        + LOSS_CHUNK_ROW_BUFFERS * global_batch * d) if loss_chunk
                   else 4 * 4 * local * global_batch),
        "runtime overhead": (runtime_overhead_mb
                             + (accumulation_overhead_mb if accumulate else 0.0)) * MB,
    }
    forward = global_batch * (img.flops + txt.flops)
    logits = 2 * global_batch * global_batch * d
    model_flops = 3 * (forward + logits)
    recompute_fraction = 0.0
    if remat_every > 0:
        recompute_fraction = sum(
            sum(b.flops for i, b in enumerate(t.blocks) if i % remat_every == 0)
            for t in (img, txt)) / max(img.flops + txt.flops, 1.0)
    hardware_flops = model_flops + forward * (recompute_fraction + (1.0 if accumulate else 0.0))
    if loss_chunk:
        hardware_flops += logits
    return Plan(global_batch, data_replicas, model_shards, num_micro_batches, remat_every,
                loss_chunk,
                dict(counts),
                {"image": img.flops, "text": txt.flops}, memory, model_flops, hardware_flops)


def _divisors(n: int) -> list:
    return [k for k in range(1, n + 1) if n % k == 0]


def recommend(model_config, global_batch: int, devices: int, device_memory_bytes: float,
              safety: float = 0.9, **plan_kwargs) -> tuple:
    """(best Plan, reason). Prefers the most data parallelism whose weights and optimizer state
    fit, then the setting with the least compute (each extra forward costs 1/3 of a step: BASIC
    accumulation with M > 1 adds one, remat adds one, a chunked loss recomputes the logits),
    then the largest micro-batch. Per setting the loss is unchunked if that fits, else in the
    largest of LOSS_CHUNKS (dividing the batch) that fits."""
    budget = safety * device_memory_bytes
    for shards in _divisors(devices):
        replicas = devices // shards
        if global_batch % replicas:
            continue
        local = global_batch // replicas
        fits = []
        chunks = [0] + [c for c in LOSS_CHUNKS if c < global_batch and global_batch % c == 0]
        for remat in (0, 1):
            plans = (plan_step(model_config, global_batch, data_replicas=replicas,
                               model_shards=shards, num_micro_batches=m, remat_every=remat,
                               loss_chunk=c, **plan_kwargs)
                     for m in _divisors(local) for c in chunks)
            fit = next((p for p in plans if p.peak_bytes <= budget), None)
            if fit is not None:
                fits.append(fit)
        if fits:
            best = min(fits, key=lambda p: (p.hardware_flops, p.num_micro_batches))
            return best, (f"fits {best.peak_bytes / MB:,.0f} MB of a {budget / MB:,.0f} MB budget "
                          f"({safety:.0%} of the device)")
    smallest_chunk = next((c for c in reversed(LOSS_CHUNKS) if global_batch % c == 0), 0)
    smallest = plan_step(model_config, global_batch, data_replicas=1, model_shards=devices,
                         num_micro_batches=global_batch, remat_every=1,
                         loss_chunk=smallest_chunk, **plan_kwargs)
    return smallest, (f"nothing fits: even {devices}-way model sharding, micro-batch 1 and remat "
                      f"need {smallest.peak_bytes / MB:,.0f} MB per device > {budget / MB:,.0f} MB")


def _human(x: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.0f}{unit}"


def format_plan(plan: Plan, reason: str = "") -> str:
    """A readable report of a Plan."""
    remat = "none" if plan.remat_every == 0 else (
        "every_block" if plan.remat_every == 1 else f"every_k (k={plan.remat_every})")
    lines = [
        f"parameters: image {_human(plan.params['image'])}, text {_human(plan.params['text'])}, "
        f"total {_human(plan.params['total'])} ({plan.params['total']:,})",
        f"forward FLOPs per example: image {_human(plan.flops_per_example['image'])}, "
        f"text {_human(plan.flops_per_example['text'])}",
        f"step: global batch {plan.global_batch}, mesh data={plan.data_replicas} x "
        f"model={plan.model_shards}, {plan.num_micro_batches} micro-batch(es) of "
        f"{plan.micro_batch} per replica, remat {remat}, loss "
        f"{f'in blocks of {plan.loss_chunk} columns' if plan.loss_chunk else 'unchunked'}",
        f"step FLOPs: model {_human(plan.model_flops)}, executed (with recomputed forwards) "
        f"{_human(plan.hardware_flops)}",
        "memory per device:",
    ]
    for name, value in plan.memory.items():
        lines.append(f"  {name:<17} {value / MB:12,.1f} MB")
    lines.append(f"  {'peak':<17} {plan.peak_bytes / MB:12,.1f} MB")
    if reason:
        lines.append(f"recommendation: {reason}")
    return "\n".join(lines)


def parse_mesh(text: str, replicas: int = 1) -> tuple:
    """'batch:4,model:2' (tools/train.py's --mesh syntax) -> (4, 2) data replicas x model
    shards; '' -> (replicas, 1)."""
    if not text:
        return replicas, 1
    from basic_tf.parallel.dtensor.mesh import parse_mesh_flag  # the one --mesh parser
    sizes = parse_mesh_flag(text)
    return sizes["batch"], sizes["model"]


def _remat_string(remat_every: int) -> str:
    """remat_every (0: none, k: blocks 0, k, 2k, ...) as train.remat's string."""
    return {0: "none", 1: "every_block"}.get(remat_every, f"every_k:{remat_every}")


def step_seconds(plan: Plan, peak_flops_per_device: float, mfu: float) -> float:
    """A step's time if every device runs the executed FLOPs (recomputation included) at `mfu`
    of its peak FLOP/s: hardware_flops / (devices x peak x mfu). An estimate, not a measurement:
    the MFU is the caller's assumption (input, collectives and the loss's serial part included)."""
    if peak_flops_per_device <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"need peak FLOP/s > 0 and 0 < mfu <= 1, got peak "
                         f"{peak_flops_per_device:g} and mfu {mfu:g}")
    devices = plan.data_replicas * plan.model_shards
    return plan.hardware_flops / (devices * peak_flops_per_device * mfu)


def format_step_estimate(plan: Plan, peak_tflops: float, mfu: float) -> str:
    """One line: the step_seconds estimate and the pairs/s it implies, with its assumptions."""
    seconds = step_seconds(plan, peak_tflops * 1e12, mfu)
    return (f"step estimate: {seconds:,.2f} s ({plan.global_batch / seconds:,.0f} pairs/s) at an "
            f"assumed {mfu:.0%} of {peak_tflops:g} TFLOP/s per device "
            f"(executed FLOPs / (devices x peak x MFU))")


def report(model_config, train, global_batch: int, data_replicas: int = 1,
           model_shards: int = 1, device_memory_gb: float = 16.0, peak_tflops: float = 0.0,
           assumed_mfu: float = 0.4, **plan_kwargs) -> str:
    """The plan of an experiment as configured (its models: basic_tf.models.ModelConfigs; its
    step: the TrainConfig's num_micro_batches, remat and loss_chunk), then the recommended
    setting for the same number of devices and device memory (what tools/plan.py prints).
    With peak_tflops (a device's peak FLOP/s, in 1e12), each plan also gets a step-time
    estimate at assumed_mfu (format_step_estimate)."""
    micro, remat_every, loss_chunk = (train.num_micro_batches, train.remat_every,
                                     train.loss_chunk)
    current = plan_step(model_config, global_batch, data_replicas=data_replicas,
                        model_shards=model_shards, num_micro_batches=micro,
                        remat_every=remat_every, loss_chunk=loss_chunk, **plan_kwargs)
    memory = device_memory_gb * 2 ** 30
    fits = "fits" if current.peak_bytes <= memory else "does NOT fit"
    best, reason = recommend(model_config, global_batch, data_replicas * model_shards, memory,
                             **plan_kwargs)
    def estimate(plan):
        return f"\n{format_step_estimate(plan, peak_tflops, assumed_mfu)}" if peak_tflops else ""

    return (f"== as configured ({fits} in {device_memory_gb:g} GiB per device)\n"
            f"{format_plan(current)}{estimate(current)}\n\n== recommended\n"
            f"{format_plan(best, reason)}{estimate(best)}\n"
            f"gin: train.num_micro_batches = {best.num_micro_batches}; "
            f"train.loss_chunk = {best.loss_chunk}; "
            f"train.remat = "
            f"'{_remat_string(best.remat_every)}'; mesh data="
            f"{best.data_replicas} x model={best.model_shards}")

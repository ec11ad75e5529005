"""TrainConfig: every setting of a training run, checked once when it is made.

gin binds it as `train.<field>` (basic_tf/from_gin.py registers it under that name, so the
bindings experiment files and --gin_bindings use, `train.num_micro_batches`, `train.remat`,
`train.train_steps`, `train.mesh`, ..., keep their names). Below the top it is a plain frozen
dataclass: loop.train, the planner and tools/plan.py read its attributes.

Every check is in __post_init__, before anything heavy runs; an error's first line names the
binding and its value (`train.train_steps='ten' must be a positive integer`). A setting that the
chosen stage or placement would silently ignore is refused, naming it: the contrastive step's
settings with stage='pretrain', `train.local_loss` with `train.mesh` (on a mesh the step runs in
one replica context and the loss is the whole batch's anyway).
"""
import dataclasses
from typing import Optional

from basic_tf.losses import LOSS_KINDS
from basic_tf.parallel.dtensor.mesh import parse_mesh_flag
from basic_tf.parallel.remat import RematPolicy
from basic_tf.training.precision import POLICIES

STAGES = ("contrastive", "pretrain")
# Capacity of the loss-spike guard's ring of recent losses (train.loss_spike_window <= this).
MAX_LOSS_WINDOW = 1024


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run (gin: `train.<field>`).

    stage: "pretrain" (stage (a): image tower + classifier on labelled images) or "contrastive"
      (stage (b)).
    train_steps: the global step to stop at (required to train: loop.train refuses None; the
      planner, which sizes one step, does not need it).
    num_micro_batches: BASIC's exact contrastive accumulation: each replica's batch is split
      into this many micro-batches (memory per micro-batch; the loss and gradient stay those of
      the whole batch). Passed to ContrastiveTask -> compute_contrastive_step.
    loss_kind: 'softmax' (CLIP/BASIC InfoNCE) or 'sigmoid' (SigLIP; with
      dual_encoder_config.use_logit_bias = True).
    local_loss: each replica computes only its rows of the loss (O(N^2/R) memory; same
      gradients). Strategies only: refused with `mesh`.
    loss_chunk: C > 0: the loss over blocks of C columns of the global batch, recomputed in
      the backward pass (memory O(N x C) instead of N^2, the same loss and gradients to
      float32 rounding; C must divide the global batch); 0: unchunked. tools/plan.py
      recommends one.
    remat: recomputation of tower blocks: 'none', 'every_block' or 'every_k:K' (every K-th
      block); `remat_policy` is it parsed.
    steps_per_loop: steps per orbit inner loop (one tf.while_loop; summaries per loop).
    checkpoint_interval: checkpoints at exact multiples of this many steps (and at the end).
    max_checkpoints: checkpoints kept (at least 2 are: the newest verified one is never
      deleted).
    log_every: steps between progress lines (None: steps_per_loop).
    clip_norm: clip the global-batch gradient to this L2 norm (None: no clipping).
    max_consecutive_nonfinite: skipped steps in a row that stop the run (TrainState's
      `consecutive_skipped`). A step is skipped for a non-finite loss, gradient or update and
      also for a finite loss spike. The name predates the spike guard; it stays because
      experiment files, --gin_bindings and the operative_config.gin of existing model_dirs
      (compared on resume: settings_diff) bind it.
    loss_spike_factor: skip a step whose loss exceeds this x the median loss of the last
      loss_spike_window applied steps (None: no loss-spike guard).
    loss_spike_window: applied steps in that median (1..MAX_LOSS_WINDOW).
    seed: seeds the weight initialisation and is the base of the per-step dropout and
      stochastic-depth seeds.
    mixed_precision: None / "float32" / "mixed_bfloat16".
    init_image_tower_from: stage (a) model_dir or ckpt prefix (stage (b), fresh model_dir).
    allow_unverified: load init_image_tower_from even when it names an unverified checkpoint
      (under a run's unverified/, or past the newest one its run's index lists); tools/train.py
      --allow_unverified. Refused without init_image_tower_from (it would do nothing).
    lock_image_tower: LiT: keep the initialised image tower fixed (stage (b); needs
      init_image_tower_from).
    eval_interval: steps between evaluations (stage (b)); None: no evaluation.
    eval_steps: validation batches per evaluation (-1: the whole evaluation set).
    use_tf_while_loop: orbit runs each loop as one tf.while_loop (TPU); False for debugging.
    jit_compile: compile each training step whole (accumulation, clipping, the skipped-step
      guard and roll-back, the optimizer update, counters) with XLA, as a TPU does: on CPU the
      proxy that finds what XLA rejects before a slice is paid for (step.TrainStep). One
      replica per process (default or OneDevice strategy) or TPUStrategy (whose replica step
      XLA compiles anyway); refused on a mesh and by Placement for several replicas.
    mesh: 'batch:B,model:M': train on a DTensor mesh of exactly all local devices, weights
      sharded by basic_tf.parallel.dtensor.layout_rules (placement.py; with the default
      strategy). None: the tf.distribute strategy.
    """
    stage: str = "contrastive"
    train_steps: Optional[int] = None
    num_micro_batches: int = 1
    loss_kind: str = "softmax"
    local_loss: bool = False
    loss_chunk: int = 0
    remat: str = "none"
    steps_per_loop: int = 100
    checkpoint_interval: int = 1000
    max_checkpoints: int = 3
    log_every: Optional[int] = None
    clip_norm: Optional[float] = 1.0
    max_consecutive_nonfinite: int = 5
    loss_spike_factor: Optional[float] = None
    loss_spike_window: int = 100
    seed: int = 0
    mixed_precision: Optional[str] = None
    init_image_tower_from: Optional[str] = None
    allow_unverified: bool = False
    lock_image_tower: bool = False
    eval_interval: Optional[int] = None
    eval_steps: int = -1
    use_tf_while_loop: bool = True
    jit_compile: bool = False
    mesh: Optional[str] = None

    # Fields a training run cannot do without (loop.train; tests/training/
    # test_experiment_files.py checks every experiment binds them).
    REQUIRED = ("train_steps",)

    def __post_init__(self):
        if self.train_steps is not None:
            _positive_int("train_steps", self.train_steps)
        for name in ("num_micro_batches", "steps_per_loop", "checkpoint_interval",
                     "max_checkpoints", "max_consecutive_nonfinite", "loss_spike_window"):
            _positive_int(name, getattr(self, name))
        for name in ("log_every", "eval_interval"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("clip_norm", "loss_spike_factor"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value <= 0):
                raise ValueError(f"train.{name}={value!r} must be a positive number or None")
        if not _is_number(self.seed) or not isinstance(self.seed, int):
            raise ValueError(f"train.seed={self.seed!r} must be an integer")
        if not _is_number(self.loss_chunk) or not isinstance(self.loss_chunk, int) \
                or self.loss_chunk < 0:
            raise ValueError(f"train.loss_chunk={self.loss_chunk!r} must be an integer >= 0 "
                             "(0: the whole loss at once)")
        if self.loss_spike_window > MAX_LOSS_WINDOW:
            raise ValueError(f"train.loss_spike_window={self.loss_spike_window} must be in "
                             f"[1, {MAX_LOSS_WINDOW}]")
        if self.loss_kind not in LOSS_KINDS:
            raise ValueError(f"train.loss_kind={self.loss_kind!r} is not one of {LOSS_KINDS}")
        for name in ("local_loss", "lock_image_tower", "use_tf_while_loop", "allow_unverified",
                     "jit_compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name}={getattr(self, name)!r} must be True or False")
        if self.mixed_precision not in POLICIES:
            raise ValueError(f"train.mixed_precision={self.mixed_precision!r} is not one of "
                             f"{POLICIES}")
        self.remat_policy  # noqa: B018  (raises naming train.remat)
        self._check_stage()
        if not self.mesh:
            object.__setattr__(self, "mesh", None)  # '' (an empty --mesh): the strategy
        else:
            parse_mesh_flag(self.mesh)  # its ValueError names the value
            if self.jit_compile:
                raise ValueError(f"train.jit_compile=True with train.mesh={self.mesh!r}: a "
                                 "DTensor mesh step is not compiled with XLA here; drop one")
            if self.local_loss:
                raise ValueError(f"train.local_loss=True does nothing with train.mesh="
                                 f"{self.mesh!r}: on a mesh the step runs in one replica context "
                                 "and computes the whole batch's loss; remove the binding")

    def _check_stage(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train.stage={self.stage!r} is not one of {STAGES}")
        if self.allow_unverified and not self.init_image_tower_from:
            raise ValueError("train.allow_unverified=True (--allow_unverified) does nothing "
                             "without train.init_image_tower_from (a resume reads what "
                             "model_dir's own index lists); remove it")
        if self.stage == "contrastive":
            if self.lock_image_tower and not self.init_image_tower_from:
                raise ValueError("train.lock_image_tower=True needs train.init_image_tower_from "
                                 "(a stage (a) checkpoint): locking a randomly initialised tower "
                                 "trains nothing useful")
            return
        if self.eval_interval is not None:
            raise ValueError("train.eval_interval is for stage='contrastive'; set it to None")
        contrastive_only = {"num_micro_batches": 1, "loss_kind": "softmax", "local_loss": False,
                            "loss_chunk": 0}
        for name, default in contrastive_only.items():  # else silently unused by stage (a)
            if getattr(self, name) != default:
                raise ValueError(f"train.{name}={getattr(self, name)!r} is for "
                                 f"stage='contrastive', not stage={self.stage!r}; remove the "
                                 "binding")
        if self.init_image_tower_from or self.lock_image_tower:
            raise ValueError("train.init_image_tower_from / train.lock_image_tower belong to "
                             "stage='contrastive' (stage (b)), not stage='pretrain'")

    def check_trainable(self) -> None:
        """ValueError naming an unbound REQUIRED field (loop.train calls it first)."""
        for name in self.REQUIRED:
            if getattr(self, name) is None:
                raise ValueError(f"train.{name} is unbound: bind it in the gin file or with "
                                 f"--gin_bindings (e.g. train.{name} = 1000)")

    @property
    def remat_policy(self) -> RematPolicy:
        """`remat` parsed (ValueError naming train.remat)."""
        return RematPolicy.parse(self.remat, name="train.remat")

    @property
    def remat_every(self) -> int:
        """The planner's form of `remat`: 0 none, k blocks 0, k, 2k, ... recomputed."""
        policy = self.remat_policy
        return {"none": 0, "every_block": 1}.get(policy.mode, policy.k)

    @property
    def mesh_sizes(self) -> Optional[dict]:
        """{'batch': B, 'model': M} of `mesh`, None without one."""
        return parse_mesh_flag(self.mesh) if self.mesh else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(name: str, value) -> None:
    if not _is_number(value) or not isinstance(value, int) or value < 1:
        raise ValueError(f"train.{name}={value!r} must be a positive integer")

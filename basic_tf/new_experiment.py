"""From your shards to one complete gin file: what tools/new_experiment.py (basic-new-experiment)
does.

  (a CSV/JSONL table or class-folder source is first written as shards, as
   basic-make-tfrecords does)
  profile the training and evaluation shards (basic_tf.data.profile)
  -> class names in label order (class_names.txt) and prompt templates read off the training
     captions (templates.txt, '{c}' = class name)
  -> the SentencePiece vocabulary, trained on the training captions (or the one given)
  -> image size from the images, sequence length from the tokenised captions and prompts
  -> model size from the data size, batch and step setting that fit the device
     (basic_tf.planner.recommend)
  -> <out_dir>/experiment.gin: the layout of the experiments in gin/ (command, data,
     preprocessing, model, init, step, optimizer, schedule, evaluations), every value written out
     (no %MACROS) and commented with where it came from.
"""
import collections
import dataclasses
import datetime
import math
import os
import shlex
import statistics
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from basic_tf.data import profile as data_profile
from basic_tf.files import absolute, remove_matching, write_atomically

GIN_NAME, CLASS_NAMES_NAME, TEMPLATES_NAME, TOKENIZER_PREFIX = (
    "experiment.gin", "class_names.txt", "templates.txt", "spm")
FALLBACK_TEMPLATES = ("a photo of a {c}.", "{c}")
TABLE_EXTENSIONS = (".csv", ".jsonl", ".json")
MAX_TEMPLATES = 8

# Image and text towers by data size (training records): a small model on a small set
# generalises better and trains in minutes on a CPU; the planner then checks memory.
MODEL_SIZES = {
    "small": dict(min_records=0, embed_dim=64, stem_width=16,
                  stages=[("C", 1, 32, 2), ("T", 1, 64, 2)], expansion=2,
                  text_width=64, text_depth=1, text_heads=2, text_mlp=128),
    "medium": dict(min_records=20_000, embed_dim=128, stem_width=32,
                   stages=[("C", 2, 64, 2), ("T", 2, 128, 2)], expansion=4,
                   text_width=128, text_depth=2, text_heads=4, text_mlp=512),
    "large": dict(min_records=500_000, embed_dim=256, stem_width=64,
                  stages=[("C", 2, 96, 2), ("C", 3, 192, 2), ("T", 5, 384, 2)], expansion=4,
                  text_width=256, text_depth=6, text_heads=4, text_mlp=1024),
}


@dataclasses.dataclass
class Experiment:
    """Everything the gin file states; see `choose` for where each value comes from."""
    train_pattern: str
    eval_pattern: Optional[str]
    out_dir: str
    tokenizer_path: str
    vocab_size: int
    class_names: List[str]
    templates: List[str]
    image_size: int
    seq_len: int
    model_size: str
    global_batch: int
    num_micro_batches: int
    remat: bool
    train_steps: int
    steps_per_loop: int
    checkpoint_interval: int
    notes: Dict[str, str]
    loss_chunk: int = 0
    record_format: str = "basic_tf"   # of the training shards (make_dataset.record_format)

    @property
    def gin_path(self) -> str:
        return os.path.join(self.out_dir, GIN_NAME)

    @property
    def class_names_path(self) -> str:
        return os.path.join(self.out_dir, CLASS_NAMES_NAME)

    @property
    def templates_path(self) -> str:
        return os.path.join(self.out_dir, TEMPLATES_NAME)


def is_source(path: str) -> bool:
    """True for what basic-make-tfrecords reads (a .csv/.jsonl table, a class-folder root or
    webdataset tars: 'shards/*.tar', 'shards/{00000..00099}.tar'), False for a glob of shards
    (basic_tf's or img2dataset's TFRecords, read as they are)."""
    return (tf.io.gfile.isdir(path) or os.path.splitext(path)[1].lower() in TABLE_EXTENSIONS
            or is_tar_pattern(path))


def is_tar_pattern(path: str) -> bool:
    """True for webdataset tars (brace ranges and globs of .tar files, joined by '::')."""
    return all(part.endswith(".tar") for part in path.split("::"))


def shards_from_source(source: str, output_prefix: str, label_column: Optional[str] = None,
                       class_names_file: Optional[str] = None, log=print,
                       flag: str = "--train") -> str:
    """Writes a table, class-folder or webdataset-tar source (`flag` names it in errors) as
    shards `<output_prefix>-*.tfrecord`, as `basic-make-tfrecords --source=table|folder|
    webdataset` does (same readers and writer, default options); returns their glob. Shards of
    an earlier run with this prefix are replaced."""
    from basic_tf.data import sources, webdataset, writer

    if is_tar_pattern(source) and not tf.io.gfile.isdir(source):
        tars = webdataset.list_tars(source, flag)  # a missing tar: named before anything goes
        remove_matching(output_prefix + "-*")
        total = webdataset.convert_tars(tars, output_prefix)
        if not total.get("written"):
            raise ValueError(f"{flag}={source!r}: no record written ({total})")
        log(f"wrote {total['written']} records of {source} in {len(total['shards'])} "
            f"shard(s) ({output_prefix}-*); skipped samples: {total['skipped_sources']}")
        return output_prefix + "-*.tfrecord"
    if tf.io.gfile.isdir(source):
        records = sources.from_folder(source)
    else:
        class_names = None
        if class_names_file:
            with tf.io.gfile.GFile(class_names_file, "r") as f:
                class_names = [line.strip() for line in f.read().splitlines() if line.strip()]
        records = sources.from_table(source, label_column=label_column, class_names=class_names)
    remove_matching(output_prefix + "-*")
    summary = writer.write_tfrecords(records, output_prefix)
    if not summary.written:
        raise ValueError(f"{source}: no record written ({summary.to_json()})")
    log(f"wrote {summary.written} records of {source} in {len(summary.shards)} shard(s) "
        f"({output_prefix}-*)")
    return output_prefix + "-*.tfrecord"


def templates_from_captions(captions_by_class: Dict[str, List[str]],
                            limit: int = MAX_TEMPLATES) -> List[str]:
    """The most frequent caption patterns with the class name replaced by '{c}', kept when they
    occur with at least two classes (or the only one): prompts in the words the text tower
    learned. FALLBACK_TEMPLATES when the captions do not contain their class names."""
    classes_of = collections.defaultdict(set)
    counts = collections.Counter()
    for name, captions in captions_by_class.items():
        for caption in captions:
            if name and caption.count(name) == 1 and "{" not in caption and "}" not in caption:
                pattern = caption.replace(name, "{c}")
                counts[pattern] += 1
                classes_of[pattern].add(name)
    need = min(2, len(captions_by_class))
    kept = [p for p, _ in counts.most_common() if len(classes_of[p]) >= need][:limit]
    return kept or list(FALLBACK_TEMPLATES)


def token_lengths(tokenizer_path: str, texts: Sequence[str]) -> List[int]:
    """Pieces per text plus EOS (what `seq_len` must hold for the text not to be cut)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=_read_bytes(tokenizer_path))
    return [len(ids) + 1 for ids in processor.encode(list(texts))]


def vocabulary_size(tokenizer_path: str) -> int:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(
        model_proto=_read_bytes(tokenizer_path)).get_piece_size()


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _round_up(x: int, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


def choose_image_size(train: data_profile.DataProfile, maximum: int = 224) -> int:
    """The median shorter side rounded to a multiple of 8 (the image tower downsamples 8x), in
    [16, maximum]: no upscaling cost for small images, at most `maximum` for photos."""
    return int(min(max(16, 8 * round(train.shorter_side() / 8)), maximum))


def choose_seq_len(caption_lengths: Sequence[int], prompt_lengths: Sequence[int],
                   maximum: int = 64) -> int:
    """Room for every prompt and for 99% of the captions, EOS included, rounded up to 8."""
    ordered = sorted(caption_lengths)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return int(min(_round_up(max(p99, max(prompt_lengths, default=2)), 8), maximum))


def choose_model_size(train_records: int) -> str:
    return max((s for s, v in MODEL_SIZES.items() if train_records >= v["min_records"]),
               key=lambda s: MODEL_SIZES[s]["min_records"])


def choose_batch(train_records: int, maximum: int = 256) -> int:
    """The largest power of two <= maximum that still gives >= 4 steps per epoch."""
    batch = 2
    while batch * 2 <= min(maximum, max(train_records // 4, 2)):
        batch *= 2
    return batch


def host_memory_gb() -> float:
    """Half of this machine's RAM: the budget of a CPU run on a machine others use too."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / 2 ** 30


def choose_schedule(train_records: int, batch: int, epochs: float,
                    train_steps: Optional[int]) -> tuple:
    """(train_steps, steps_per_loop, checkpoint_interval): `epochs` passes over the data (or
    `train_steps`), ~10 loops with one progress line each, ~5 checkpoints, the last at the end
    (train_steps is a multiple of checkpoint_interval, a multiple of steps_per_loop)."""
    steps = train_steps or max(100, math.ceil(epochs * train_records / batch))
    steps_per_loop = max(1, min(100, steps // 10))
    interval = steps_per_loop * max(1, math.ceil(steps / steps_per_loop / 5))
    return _round_up(steps, interval), steps_per_loop, interval


def model_gin(size: str, image_size: int, seq_len: int, vocab_size: int) -> str:
    """The model bindings (also parsed alone, for the planner)."""
    m = MODEL_SIZES[size]
    stages = "[" + ", ".join(f"('{k}', {n}, {w}, {s})" for k, n, w, s in m["stages"]) + "]"
    return f"""\
dual_encoder_config.image_tower = 'coatnet'
dual_encoder_config.embed_dim = {m['embed_dim']}
dual_encoder_config.image_size = {image_size}  # = make_dataset.image_size
dual_encoder_config.init_temperature = 0.07
dual_encoder_config.max_logit_scale = 100.0
dual_encoder_config.use_logit_bias = False

coatnet_config.preset = None
coatnet_config.stem_width = {m['stem_width']}
coatnet_config.stages = {stages}  # (kind, blocks, width, stride)
coatnet_config.head_dim = 32
coatnet_config.expansion = {m['expansion']}
coatnet_config.drop_path_rate = 0.0
coatnet_config.dropout_rate = 0.0

text_tower_config.vocab_size = {vocab_size}  # the pieces of make_dataset.tokenizer_path
text_tower_config.max_len = {seq_len}  # = make_dataset.seq_len
text_tower_config.width = {m['text_width']}
text_tower_config.depth = {m['text_depth']}
text_tower_config.num_heads = {m['text_heads']}
text_tower_config.mlp_dim = {m['text_mlp']}
text_tower_config.pooling = 'eos'
text_tower_config.causal = False
text_tower_config.dropout_rate = 0.0
"""


def plan(size: str, image_size: int, seq_len: int, vocab_size: int, batch: int,
         device_memory_gb: float):
    """(Plan, reason) of basic_tf.planner.recommend for this model and batch on one device."""
    import gin

    from basic_tf import config, from_gin, planner

    config.register_configurables()
    gin.clear_config()
    gin.parse_config(model_gin(size, image_size, seq_len, vocab_size))
    try:
        return planner.recommend(from_gin.model_configs(), batch, 1,
                                 device_memory_gb * 2 ** 30)
    finally:
        gin.clear_config()


def command_lines(exp: Experiment, model_dir: str, export_dir: str) -> List[str]:
    """The train / evaluate / export commands of this experiment (installed-command form)."""
    q = shlex.quote
    gin_flag = f"--gin_file={q(exp.gin_path)}"
    labels = f"--class_names={q(exp.class_names_path)} --templates={q(exp.templates_path)}"
    lines = [f"basic-train {gin_flag} --model_dir={q(model_dir)}"]
    if exp.eval_pattern and exp.class_names:
        lines.append(f"basic-evaluate {gin_flag} --model_dir={q(model_dir)} "
                     f"--tfrecords={q(exp.eval_pattern)} {labels} "
                     f"--out={q(os.path.join(model_dir, 'eval.json'))}")
    elif exp.eval_pattern:
        lines.append(f"basic-evaluate {gin_flag} --model_dir={q(model_dir)} "
                     f"--retrieval_tfrecords={q(exp.eval_pattern)} "
                     f"--out={q(os.path.join(model_dir, 'eval.json'))}")
    if exp.class_names:
        lines.append(f"basic-export {gin_flag} --checkpoint={q(model_dir)} "
                     f"--export_dir={q(export_dir)} {labels}")
    return lines


def choose(train_pattern: str, eval_pattern: Optional[str], out_dir: str, *,
           tokenizer: Optional[str] = None, vocab_size: int = 1000, epochs: float = 10.0,
           train_steps: Optional[int] = None, image_size: Optional[int] = None,
           max_batch: int = 256, device_memory_gb: Optional[float] = None,
           log=print) -> tuple:
    """Profiles the data, trains the tokenizer (unless given), chooses every value.

    Returns (Experiment, train DataProfile, eval DataProfile or None). Writes the tokenizer
    (<out_dir>/spm.model, .vocab) unless `tokenizer` is given; nothing else.
    """
    from basic_tf.data import class_names as data_class_names
    from basic_tf.data import tokenizer as spm_tokenizer

    out_dir = absolute(out_dir)
    log(f"reading {train_pattern}")
    train = data_profile.profile_shards(train_pattern)
    log("  " + train.describe().replace("\n", "\n  "))
    evaluation = None
    if eval_pattern:
        log(f"reading {eval_pattern}")
        evaluation = data_profile.profile_shards(eval_pattern)
        if evaluation.record_format == "img2dataset":  # evaluation tools read our schema
            from basic_tf.data import img2dataset

            prefix = os.path.join(out_dir, "data", "eval")
            remove_matching(prefix + "-*")
            summary = img2dataset.to_shards(eval_pattern, prefix)
            log(f"wrote {summary.written} records of {eval_pattern} in {len(summary.shards)} "
                f"shard(s) ({prefix}-*); skipped: {summary.skipped_sources}")
            eval_pattern = prefix + "-*.tfrecord"
            evaluation = data_profile.profile_shards(eval_pattern)
        log("  " + evaluation.describe().replace("\n", "\n  "))
    # written one per line to class_names.txt: each must read back as itself, and be its own
    class_names = data_class_names.check(train.ordered_class_names(), f"--train={train_pattern}",
                                         unique=True)
    if evaluation is not None and evaluation.class_names:
        unknown = {label: name for label, name in evaluation.class_names.items()
                   if label >= len(class_names) or class_names[label] != name}
        if unknown:
            label = min(unknown)
            raise ValueError(f"--eval={eval_pattern}: label {label} is named "
                             f"{unknown[label]!r}, in --train={train_pattern} "
                             f"{class_names[label] if label < len(class_names) else 'absent'!r}; "
                             "write both splits with the same class-name list")
    templates = templates_from_captions(train.class_captions) if class_names else []
    prompts = [t.replace("{c}", name) for name in class_names for t in templates]

    if tokenizer:
        tokenizer_path, origin = absolute(tokenizer), "given with --tokenizer"
    else:
        # Repeats give SentencePiece enough sentences on a small set (as basic-demo does).
        repeat = max(1, 2000 // max(len(train.captions), 1))
        tokenizer_path = spm_tokenizer.train_sentencepiece(
            (train.captions + prompts) * repeat, os.path.join(out_dir, TOKENIZER_PREFIX),
            vocab_size)
        origin = f"trained on the {len(train.captions)} training captions (asked {vocab_size})"
    pieces = vocabulary_size(tokenizer_path)
    log(f"tokenizer {tokenizer_path}: {pieces} pieces, {origin}")

    caption_lengths = token_lengths(tokenizer_path, sorted(set(train.captions)))
    prompt_lengths = token_lengths(tokenizer_path, prompts)
    seq_len = choose_seq_len(caption_lengths, prompt_lengths)
    size = image_size or choose_image_size(train)
    model_size = choose_model_size(train.records)
    batch = choose_batch(train.records, max_batch)
    memory = device_memory_gb or host_memory_gb()
    best, reason = plan(model_size, size, seq_len, pieces, batch, memory)
    steps, per_loop, interval = choose_schedule(train.records, batch, epochs, train_steps)
    cut = sum(n > seq_len for n in caption_lengths)
    notes = {
        "tokenizer": origin,
        "seq_len": (f"tokens incl. EOS: captions median {statistics.median(caption_lengths):g}, "
                    f"max {max(caption_lengths)} ({cut} of {len(caption_lengths)} distinct "
                    f"captions cut); prompts max {max(prompt_lengths, default=0)}"),
        "image_size": ("given with --image_size" if image_size else
                       f"median shorter side {train.shorter_side()} px, to a multiple of 8"),
        "model": f"'{model_size}' for {train.records} training records",
        "plan": (f"{best.params['total'] / 1e6:.2f} M parameters; batch {batch} in "
                 f"{best.num_micro_batches} micro-batch(es), loss chunk {best.loss_chunk}, "
                 f"recompute "
                 f"{'on' if best.remat_every else 'off'}: {reason} ({memory:.1f} GiB device"
                 f"{' given' if device_memory_gb else ': half the RAM of this machine'})"),
        "steps": ("given with --train_steps" if train_steps else
                  f"{epochs:g} epochs of {train.records} records at batch {batch}"),
        "templates": ("no labels: the evaluation is image-text retrieval, and the export "
                      "(a zero-shot classifier) needs class names" if not class_names else
                      "read off the training captions ('{c}' = class name)"
                      if templates != list(FALLBACK_TEMPLATES) else
                      "generic: the training captions do not contain their class names"),
    }
    exp = Experiment(absolute(train_pattern),
                     absolute(eval_pattern) if eval_pattern else None, out_dir,
                     tokenizer_path, pieces, class_names, templates, size, seq_len, model_size,
                     batch, best.num_micro_batches, bool(best.remat_every), steps, per_loop,
                     interval, notes, best.loss_chunk, train.record_format)
    return exp, train, evaluation


def render_gin(exp: Experiment, train: data_profile.DataProfile,
               evaluation: Optional[data_profile.DataProfile], model_dir: str,
               export_dir: str) -> str:
    """The text of experiment.gin."""
    commands = "\n".join(f"#   {line}" for line in command_lines(exp, model_dir, export_dir))
    found = "\n".join(f"#   {line}" for line in train.describe().splitlines())
    found_eval = ("\n".join(f"#   {line}" for line in evaluation.describe().splitlines())
                  if evaluation else "#   (none given)")
    n = exp.notes
    peak_lr = 2e-3 if exp.model_size == "small" else 1e-3
    return f"""\
# experiment.gin: written by basic-new-experiment (tools/new_experiment.py) on
# {datetime.date.today().isoformat()}. It trains, evaluates and exports as it is; every value is
# written out (no %MACROS) with where it came from, so edit any of them freely. Same layout as
# the experiments in the project's gin/ folder.
#
# Command: train, evaluate (zero-shot, on the evaluation shards), export for TF Serving:
{commands}
# (from a checkout: python3 tools/train.py ... instead of basic-train ...)
#
# Training data: {exp.train_pattern}
{found}
# Evaluation data: {exp.eval_pattern or '-'}
{found_eval}
# Class names (label order): {exp.class_names_path if exp.class_names else '-'}
# Prompt templates: {exp.templates_path if exp.templates else '-'}; {n['templates']}

# ---- Data: read the same way by training, evaluation and export
make_dataset.file_pattern = {exp.train_pattern!r}
make_dataset.record_format = {exp.record_format!r}
make_dataset.tokenizer_path = {exp.tokenizer_path!r}  # {n['tokenizer']}
make_dataset.global_batch_size = {exp.global_batch}
make_dataset.shuffle_buffer = {min(10_000, train.records)}

# ---- Preprocessing
make_dataset.image_size = {exp.image_size}  # {n['image_size']}
make_dataset.seq_len = {exp.seq_len}  # {n['seq_len']}
make_dataset.area_range = (0.8, 1.0)  # random crops keep most of the image
make_dataset.aspect_ratio_range = (0.75, 1.333)
make_dataset.random_flip = True
make_dataset.eval_crop_fraction = 1.0  # evaluation and serving see the whole image
make_dataset.antialias = False

# ---- Model: {n['model']}
{model_gin(exp.model_size, exp.image_size, exp.seq_len, exp.vocab_size)}
# ---- Init: from scratch
train.stage = 'contrastive'
train.init_image_tower_from = None
train.seed = 0

# ---- Step: BASIC's contrastive accumulation
# Planner: {n['plan']}
train.num_micro_batches = {exp.num_micro_batches}  # see Planner above
train.loss_kind = 'softmax'
train.local_loss = False
train.loss_chunk = {exp.loss_chunk}  # see Planner above (0: the whole logits)
train.remat = '{'every_block' if exp.remat else 'none'}'
train.mesh = None  # one device, or the strategy of --strategy

# ---- Optimizer: AdamW
make_optimizer.kind = 'adamw'
make_optimizer.learning_rate = @learning_rate_schedule()
make_optimizer.weight_decay = 0.05
train.clip_norm = 1.0

# ---- Schedule: warm-up + cosine; steps: {n['steps']}
train.train_steps = {exp.train_steps}
learning_rate_schedule.peak_value = {peak_lr:g}
learning_rate_schedule.total_steps = {exp.train_steps}  # = train.train_steps
learning_rate_schedule.warmup_steps = {max(1, exp.train_steps // 10)}
learning_rate_schedule.decay = 'cosine'
train.steps_per_loop = {exp.steps_per_loop}  # one progress line per loop
train.checkpoint_interval = {exp.checkpoint_interval}  # divides train_steps: the last is at the end
train.max_checkpoints = 2

# ---- Evaluations: zero-shot after training, with basic-evaluate (the command above)
train.eval_interval = None
"""


def write(exp: Experiment, train, evaluation, model_dir: Optional[str] = None,
          export_dir: Optional[str] = None) -> str:
    """Writes experiment.gin, class_names.txt and templates.txt in exp.out_dir; checks that the
    gin file parses; returns its path."""
    from basic_tf import config

    model_dir = absolute(model_dir or os.path.join(exp.out_dir, "model"))
    export_dir = absolute(export_dir or os.path.join(exp.out_dir, "serving"))
    tf.io.gfile.makedirs(exp.out_dir)
    if exp.class_names:
        _write_lines(exp.class_names_path, exp.class_names)
        _write_lines(exp.templates_path, exp.templates)
    write_atomically(exp.gin_path, render_gin(exp, train, evaluation, model_dir, export_dir))
    config.parse([exp.gin_path])    # every name and value must parse: fail here, not in training
    return exp.gin_path


def _write_lines(path: str, lines: Sequence[str]) -> None:
    write_atomically(path, "".join(line + "\n" for line in lines))

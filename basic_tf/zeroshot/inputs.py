"""Evaluation inputs the data pipeline does not make: TFDS classification sets and
all-captions retrieval batches from captioned TFRecords.

Labelled TFRecords for classification come from `basic_tf.data.pipeline.make_dataset(
ctx, data, training=False)`. Both builders here use the same evaluation view as that pipeline
(`basic_tf.data.augment.decode_and_center_crop` on the encoded image bytes) and emit the batch
layout of `zeroshot.evaluation` / `zeroshot.retrieval`: static shapes, the last partial batch
padded with mask-0 rows, and under a strategy the batch count rounded up to whole steps so every
replica of this pipeline gets a batch. Use them with `strategy.distribute_datasets_from_function(
lambda ctx: builder(..., input_context=ctx))`.
"""
import dataclasses
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from basic_tf.data import augment, limits, schema
from basic_tf.data.pipeline import pad_to_batches, shard_for_pipeline
from basic_tf.zeroshot import prompts


@dataclasses.dataclass(frozen=True)
class TfdsPreset:
    """How to evaluate a TFDS classification set: split, class-name set, template set."""
    split: str
    class_names: str
    templates: str


# Class-name sets index the dataset's own labels (subsets such as "imagenet_a" map the TFDS
# 1000-way ImageNet labels to the 200 classes present).
TFDS_PRESETS: Dict[str, TfdsPreset] = {
    "imagenet2012": TfdsPreset("validation", "imagenet1k", "imagenet1k"),
    "imagenet_v2": TfdsPreset("test", "imagenet1k", "imagenet1k"),
    "imagenet_a": TfdsPreset("test", "imagenet_a", "imagenet1k"),
    "imagenet_r": TfdsPreset("test", "imagenet_r", "imagenet1k"),
    "imagenet_sketch": TfdsPreset("test", "imagenet1k", "imagenet1k"),
    "cifar10": TfdsPreset("test", "cifar10", "cifar10"),
    "cifar100": TfdsPreset("test", "cifar100", "cifar100"),
    "mnist": TfdsPreset("test", "mnist", "mnist"),
    "fashion_mnist": TfdsPreset("test", "fashion_mnist", "fashion_mnist"),
}


def _per_replica(global_batch_size: int, input_context) -> Tuple[int, int]:
    """(per-replica batch, replicas fed by this pipeline)."""
    if input_context is None:
        return global_batch_size, 1
    if global_batch_size % input_context.num_replicas_in_sync:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"{input_context.num_replicas_in_sync} replicas in sync")
    replicas = max(input_context.num_replicas_in_sync // input_context.num_input_pipelines, 1)
    return input_context.get_per_replica_batch_size(global_batch_size), replicas


def tfds_builder(name: str, data_dir: Optional[str] = None):
    """The TFDS builder of a locally prepared dataset; a clear error naming the download step
    (manual for ImageNet variants) when the data is not in `data_dir`."""
    import tensorflow_datasets as tfds  # heavy import, only when TFDS is used

    data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name: tfds raises DatasetNotFoundError
        raise ValueError(f"--tfds_name={name!r} is not a TFDS dataset ({e}); known presets: "
                         f"{sorted(TFDS_PRESETS)}") from None
    if not builder.is_prepared():
        manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        where = data_dir or "~/tensorflow_datasets (the default TFDS data dir)"
        step = (f"It needs a MANUAL download first:\n{manual.strip()}\nthen run: tfds build {name} "
                f"--manual_dir=<folder with those files> --data_dir={where}" if manual else
                f"Prepare it on a machine with internet access: tfds build {name} "
                f"--data_dir={where} (then copy that folder here)")
        raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. "
                                f"{step}. Nothing is downloaded at evaluation time.")
    return builder


def tfds_classification_dataset(name: str,
                                split: Optional[str] = None,
                                data_dir: Optional[str] = None,
                                image_size: int = 224,
                                global_batch_size: int = 256,
                                class_names: Optional[str] = None,
                                crop_fraction: float = 1.0,
                                antialias: bool = False,
                                image_key: str = "image",
                                label_key: str = "label",
                                input_context: Optional[tf.distribute.InputContext] = None
                                ) -> tf.data.Dataset:
    """A locally prepared TFDS image-classification split as evaluation batches.

    Args:
      name, split, data_dir: the TFDS dataset; split defaults to the preset's (TFDS_PRESETS).
      image_size, crop_fraction, antialias: centre crop of the shorter side, resized to
        image_size (the data config's evaluation view, basic_tf.data.data_config).
      global_batch_size: summed over replicas.
      class_names: the class-name set the classifier is built from (default: the preset's); a
        subset such as "imagenet_a" remaps labels to the subset's columns.

    Returns batches {"images" float32 [b,H,W,3], "labels" int32 [b], "mask" float32 [b]}.
    """
    import tensorflow_datasets as tfds

    preset = TFDS_PRESETS.get(name)
    split = split or (preset.split if preset else "test")
    class_names = class_names or (preset.class_names if preset else None)
    builder = tfds_builder(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(f"TFDS {name!r} has no split {split!r}; it has "
                         f"{sorted(builder.info.splits)}")
    per_replica, replicas = _per_replica(global_batch_size, input_context)
    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=None)
    # SkipDecoding keeps the encoded PNG/JPEG bytes, so the data room's decode + centre crop
    # (the same view as TFRecord evaluation) does the decoding.
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config,
                            decoders={image_key: tfds.decode.SkipDecoding()})
    remap = _label_remap(class_names, builder.info.features[label_key].num_classes)

    def example(ex):
        label = tf.cast(ex[label_key], tf.int32)
        if remap is not None:
            label = tf.gather(remap, label)  # -1 for labels outside the subset
        image = augment.decode_and_center_crop(ex[image_key], image_size, crop_fraction,
                                               antialias)
        return {"images": image, "labels": label}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pad_to_batches(ds, per_replica, replicas).prefetch(tf.data.AUTOTUNE)


def _label_remap(class_names: Optional[str], num_labels: int) -> Optional[tf.Tensor]:
    """int32 [num_labels] mapping the dataset's labels to subset columns (-1 if absent), or None
    when the class names are not a subset."""
    indices = prompts.class_subset_indices(class_names) if class_names else None
    if indices is None:
        return None
    parent = prompts.class_subset_parent(class_names)
    parent_size = len(prompts.load_class_names(parent))
    if num_labels != parent_size:
        raise ValueError(f"class subset {class_names!r} indexes {parent!r} ({parent_size} labels) "
                         f"but the dataset has {num_labels} labels")
    table = [-1] * num_labels
    for column, label in enumerate(indices):
        table[label] = column
    return tf.constant(table, tf.int32)


def retrieval_dataset(tokenizer: Callable[[tf.Tensor], tf.Tensor],
                      file_pattern: Sequence[str],
                      image_size: int = 224,
                      global_batch_size: int = 64,
                      max_captions: int = 5,
                      crop_fraction: float = 1.0,
                      antialias: bool = False,
                      input_context: Optional[tf.distribute.InputContext] = None,
                      bounds: Optional[limits.InputLimits] = None) -> tf.data.Dataset:
    """Captioned TFRecords (basic_tf.data.schema) as retrieval batches with ALL captions.

    Each image keeps its first `max_captions` non-empty captions (COCO has 5, Flickr30k 5).
    Records whose image does not decode, or has more pixels than input_limits.max_image_pixels
    (read from its header), are skipped and counted, like the data pipeline does; captions are
    cut to input_limits.max_caption_bytes before tokenisation (`bounds`; default:
    `limits.input_limits()`'s).
    Returns batches {"images" float32 [b,H,W,3], "token_ids" int32 [b,K,L],
    "caption_mask" float32 [b,K], "caption_hash" int64 [b,K] (fingerprint of the lower-cased,
    whitespace-folded text: retrieval's ground truth is caption identity), "mask" float32 [b],
    "skipped" int32 [b] (records dropped just before each row)} with K = max_captions.
    """
    if max_captions < 1:
        raise ValueError(f"retrieval_dataset.max_captions={max_captions} must be >= 1")
    files = shard_for_pipeline(schema.list_shards(file_pattern), input_context)
    per_replica, replicas = _per_replica(global_batch_size, input_context)
    bounds = bounds or limits.input_limits()

    def real(record):
        ex = schema.parse_example(record)
        captions = tf.strings.strip(ex[schema.CAPTION_KEY])
        captions = tf.boolean_mask(captions, tf.strings.length(captions) > 0)[:max_captions]
        captions, _ = limits.cut_captions(captions, bounds.max_caption_bytes)  # cheap tokens
        n = tf.size(captions)
        padded = tf.concat([captions, tf.fill([max_captions - n], "")], axis=0)
        token_ids = tokenizer(tf.ensure_shape(padded, [max_captions]))
        caption_mask = tf.cast(tf.range(max_captions) < n, tf.float32)
        token_ids *= tf.cast(caption_mask[:, None], token_ids.dtype)  # padding captions: all 0
        folded = tf.strings.regex_replace(tf.strings.lower(padded), r"\s+", " ")
        caption_hash = tf.ensure_shape(tf.strings.to_hash_bucket_fast(folded, 2 ** 62),
                                       [max_captions])
        pixels = limits.check_image_pixels(ex[schema.IMAGE_KEY], bounds.max_image_pixels)
        with tf.control_dependencies([pixels]):  # oversized: skipped before decoding
            image = augment.decode_and_center_crop(ex[schema.IMAGE_KEY], image_size,
                                                   crop_fraction, antialias)
        return image, token_ids, caption_mask, caption_hash, tf.constant(1.0)

    def example(index, element):
        record, is_record = element
        image, token_ids, caption_mask, caption_hash, mask = tf.cond(
            is_record, lambda: real(record),
            lambda: (tf.zeros([image_size, image_size, 3]),
                     tokenizer(tf.fill([max_captions], "")) * 0,
                     tf.zeros([max_captions]), tf.fill([max_captions], tf.constant(-1, tf.int64)),
                     tf.constant(0.0)))
        return {"index": index, "images": image, "token_ids": token_ids,
                "caption_mask": caption_mask, "caption_hash": caption_hash, "mask": mask}

    def count_skipped(last, ex):
        """Records dropped (undecodable) just before this element: the gap in record numbers."""
        out = {k: v for k, v in ex.items() if k != "index"}
        out["skipped"] = tf.cast(ex["index"] - last - 1, tf.int32)
        return ex["index"], out

    # A mask-0 END element after the records carries the count of bad records at the very end.
    records = tf.data.TFRecordDataset(files).map(lambda r: (r, tf.constant(True)))
    end = tf.data.Dataset.from_tensors((tf.constant(""), tf.constant(False)))
    ds = records.concatenate(end).enumerate()
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().scan(tf.constant(-1, tf.int64), count_skipped)
    ds = ds.filter(lambda ex: (ex["mask"] > 0) | (ex["skipped"] > 0))
    return pad_to_batches(ds, per_replica, replicas).prefetch(tf.data.AUTOTUNE)

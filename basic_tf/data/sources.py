"""Where records come from: CSV/JSONL tables, class-folder trees, NumPy arrays, local TFDS sets.

Every source is a generator of `schema.Record`s with a stable `example_id`, so the writer
(`basic_tf.data.writer`) is the same for all of them. Sources that only know a class name
(folders, arrays, classification TFDS sets) make captions from templates: every template filled
with the class name, one caption each (training then picks one at random per step).
"""
import csv
import io
import itertools
import json
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from basic_tf.data import schema
from basic_tf.data import templates as placeholder
from basic_tf.files import absolute, is_absolute, is_inside, normalized

# Training caption templates ("{c}" = class name, as in prompt templates: data/templates.py).
# Zero-shot evaluation uses its own, different prompt set (basic_tf/zeroshot), so that zero-shot
# accuracy is not measured on training prompts.
DEFAULT_CAPTION_TEMPLATES = (
    "a photo of a {c}.",
    "a picture of a {c}.",
    "an image showing a {c}.",
    "{c}",
    "a close-up photo of the {c}.",
    "a small {c} on a plain background.",
    "a low resolution photo of a {c}.",
    "a black and white picture of a {c}.",
    "this is a {c}.",
    "a cropped photo of one {c}.",
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def caption_templates(templates: Sequence[str] = DEFAULT_CAPTION_TEMPLATES) -> tuple:
    """The training caption templates, checked (gin binds `caption_templates.templates = [...]`
    at the top, basic_tf/from_gin_data.py, whose callers pass the result as `templates`);
    '{c}' = class name ('{}' is read as '{c}' with a warning: basic_tf.data.templates)."""
    templates = tuple(templates)
    if not templates:
        raise ValueError("caption_templates.templates: the list is empty; give at least one, "
                         "e.g. 'a photo of a {c}.'")
    return tuple(placeholder.normalize_template(t, f"caption_templates.templates[{i}]")
                 for i, t in enumerate(templates))


def _templates(templates: Optional[Sequence[str]]) -> tuple:
    """Explicit templates (checked), else the built-in 10."""
    return caption_templates() if templates is None else caption_templates(templates)


def class_captions(class_name: str, templates: Sequence[str]) -> list:
    """All templates filled with `class_name`: [len(templates)] captions."""
    return [placeholder.fill(t, class_name) for t in templates]


def from_table(path: str, image_column: str = "image", caption_column: str = "caption",
               label_column: Optional[str] = None, id_column: Optional[str] = None,
               image_root: Optional[str] = None,
               class_names: Optional[Sequence[str]] = None,
               strict: bool = False, allow_outside_paths: bool = False
               ) -> Iterator[schema.Record]:
    """Rows of a CSV (header row) or JSONL file (by extension: .csv / .jsonl / .json).

    `caption_column` may name several columns separated by commas ("caption,alt_text"); a JSONL
    value may also be a list of captions. Image paths are relative to `image_root` (default: the
    table's folder). The id is `id_column`'s value, else the image path as written in the table.
    Labels are integers; `class_names[label]` becomes the label name when given.

    A row whose image file is missing or unreadable becomes a `schema.SkippedSource` naming the
    row (the writer counts and logs it); with `strict` it raises FileNotFoundError instead. Text
    that is not UTF-8 (or a JSON lone surrogate) raises ValueError naming the file and line.

    An image path that leads outside the image folder (absolute, or `..` past it; compared as
    written, symbolic links inside the folder are followed as usual) raises ValueError naming the
    row and the path unless `allow_outside_paths`: a table from someone else must not pack any
    image this machine can read into shards (tools/make_tfrecords.py --allow_outside_paths).
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"{path}: table must be .csv or .jsonl (got {ext!r})")
    root = image_root if image_root is not None else os.path.dirname(absolute(path))
    caption_columns = [c.strip() for c in caption_column.split(",") if c.strip()]
    for row_number, row in _table_rows(path, ext):
        where = f"{path} row {row_number}"
        for col in [image_column] + caption_columns:
            if col not in row:
                raise ValueError(f"{where}: no column {col!r}; columns are {sorted(row)}")
        captions = []
        for col in caption_columns:
            value = row[col]
            captions.extend(value if isinstance(value, list) else [value])
        image_path = str(row[image_column])
        full_path = image_path if is_absolute(image_path) else os.path.join(root, image_path)
        if not allow_outside_paths:
            _check_inside(full_path, root, f"{where}: column {image_column!r} {image_path!r}",
                          "the table's folder" if image_root is None else "image_root")
        captions = [str(c) for c in captions]
        for i, caption in enumerate(captions):
            _check_encodable(caption, f"{where}: caption {i}")
        label = label_name = None
        if label_column:
            try:
                label = int(row[label_column])
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{where}: column {label_column!r} must hold an integer label, "
                                 f"got {row.get(label_column)!r}") from None
            label_name = class_names[label] if class_names else None
        example_id = str(row[id_column]) if id_column else image_path
        _check_encodable(example_id, f"{where}: id")
        image = _image_or_skip(full_path, where, strict)
        if isinstance(image, schema.SkippedSource):
            yield image
            continue
        yield schema.Record(image=image, captions=captions, example_id=example_id, label=label,
                            label_name=label_name)


def from_folder(root: str, templates: Optional[Sequence[str]] = None,
                strict: bool = False) -> Iterator[schema.Record]:
    """An image tree `root/<class name>/**/<image>`.

    Label order: labels number the class sub-folders in sorted (alphabetical, case-sensitive)
    order of their names, NOT any order the classes have elsewhere: `ankle_boot/`, `bag/`,
    `trouser/` are labels 0, 1, 2. Every record stores its label name too, and the writer lists
    the names in label order in `<output_prefix>.class_names.json`; evaluation and export check
    the class names they are given against the records (basic_tf.zeroshot.labels).
    The class name is the folder name with '_' read as a space. Ids are paths relative to root.
    Templates default to `caption_templates()` (as in from_arrays and from_tfds). An unreadable
    file becomes a `schema.SkippedSource` (with `strict`: FileNotFoundError).
    """
    templates = _templates(templates)
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder; expected {root}/<class name>/<images>")
    classes = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                     if tf.io.gfile.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders; expected {root}/<class name>/<images>")
    for label, folder in enumerate(classes):
        name = folder.replace("_", " ")
        for dirpath, dirnames, filenames in tf.io.gfile.walk(os.path.join(root, folder)):
            dirnames.sort()
            for filename in sorted(filenames):
                if os.path.splitext(filename)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, filename)
                image = _image_or_skip(path, path, strict)
                if isinstance(image, schema.SkippedSource):
                    yield image
                    continue
                yield schema.Record(image=image,
                                    captions=class_captions(name, templates),
                                    example_id=path[len(root.rstrip("/")) + 1:], label=label,
                                    label_name=name)


def from_arrays(images: np.ndarray, labels: Optional[np.ndarray] = None,
                class_names: Optional[Sequence[str]] = None,
                captions: Optional[Sequence[Sequence[str]]] = None,
                templates: Optional[Sequence[str]] = None, name: str = "arrays",
                image_format: str = "png", jpeg_quality: int = 95) -> Iterator[schema.Record]:
    """uint8 images [N, H, W] (grayscale, stored as 3 channels) or [N, H, W, 3].

    Captions come from `captions[i]` when given, else from templates and `class_names[labels[i]]`.
    Ids are "<name>/<i:08d>". PNG keeps pixels exact; JPEG enables the fused decode-and-crop.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
            images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(f"from_arrays: images must be uint8 [N,H,W] or [N,H,W,1|3], got "
                         f"{images.dtype} {images.shape}")
    if captions is None and (labels is None or class_names is None):
        raise ValueError("from_arrays: give captions, or labels and class_names for templates")
    n = len(images)
    for arr, what in ((labels, "labels"), (captions, "captions")):
        if arr is not None and len(arr) != n:
            raise ValueError(f"from_arrays: {what} has {len(arr)} entries for {n} images")
    templates = _templates(templates) if captions is None else None
    for i in range(n):
        label = int(labels[i]) if labels is not None else None
        label_name = class_names[label] if (label is not None and class_names) else None
        caps = list(captions[i]) if captions is not None else class_captions(label_name, templates)
        yield schema.Record(image=encode_image(images[i], image_format, jpeg_quality),
                            captions=caps, example_id=f"{name}/{i:08d}", label=label,
                            label_name=label_name)


def from_tfds(name: str, split: str = "train", data_dir: Optional[str] = None,
              image_key: Optional[str] = None, caption_key: Optional[str] = None,
              label_key: Optional[str] = "label",
              templates: Optional[Sequence[str]] = None) -> Iterator[schema.Record]:
    """A TFDS dataset already prepared in `data_dir` (never downloads).

    Images are taken still encoded (no decode/re-encode). `caption_key` names a text feature,
    nested names joined by '/' ("captions/text"); without it the dataset must have a ClassLabel
    `label_key` and captions come from templates. Ids are "<name>/<split>/<tfds_id>".
    """
    import tensorflow_datasets as tfds  # heavy import, only for this source

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={builder.data_dir!r}; basic_tf "
            "never downloads at run time: prepare it there first (tfds build) or pass the right "
            "--tfds_data_dir")
    features = builder.info.features
    if image_key is None:
        image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        if not image_keys:
            raise ValueError(f"TFDS {name!r}: no Image feature; features are {list(features)}")
        image_key = image_keys[0]
    label_feature = features[label_key] if label_key and label_key in features else None
    if caption_key is None and not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(f"TFDS {name!r}: give caption_key (a text feature) or a ClassLabel "
                         f"label_key; features are {list(features)}")
    templates = _templates(templates)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={image_key: tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(add_tfds_id=True))
    for ex in tfds.as_numpy(ds):
        label = label_name = None
        if isinstance(label_feature, tfds.features.ClassLabel):
            label = int(ex[label_key])
            label_name = label_feature.int2str(label)
        if caption_key:
            value = ex
            for part in caption_key.split("/"):
                value = value[part]
            caps = [c.decode("utf-8") for c in np.atleast_1d(value).tolist()]
        else:
            caps = class_captions(label_name, templates)
        tfds_id = ex["tfds_id"].decode("utf-8")
        yield schema.Record(image=ex[image_key], captions=caps,
                            example_id=f"{name}/{split}/{tfds_id}", label=label,
                            label_name=label_name)


def encode_image(image: np.ndarray, image_format: str = "png", jpeg_quality: int = 95) -> bytes:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] -> PNG/JPEG/WebP bytes of a 3-channel RGB image
    (WebP: lossy at `jpeg_quality`)."""
    from PIL import Image

    if image_format not in schema.IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}, expected one of {schema.IMAGE_FORMATS}")
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image, "RGB").save(buf, format="PNG")
    elif image_format == "webp":
        Image.fromarray(image, "RGB").save(buf, format="WEBP", quality=jpeg_quality)
    else:
        Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=jpeg_quality)
    return buf.getvalue()


def _check_inside(path: str, folder: str, where: str, what: str) -> None:
    """ValueError naming `where` when `path` (normalised as written) is not inside `folder`
    (`what` it is, for the message)."""
    if not is_inside(path, folder):
        raise ValueError(f"{where} is outside {what} {normalized(folder)}: tables may only name "
                         "images inside it (pass --allow_outside_paths if you trust this "
                         "table, or --image_root to set the folder)")


def _image_or_skip(path: str, where: str, strict: bool):
    """The file's bytes, or a schema.SkippedSource naming `where` when it cannot be read
    (with `strict`: the FileNotFoundError)."""
    try:
        return _read_image(path, where)
    except FileNotFoundError as e:
        if strict:
            raise
        return schema.SkippedSource(where, str(e).split(": ", 1)[-1])


def _read_image(path: str, where: str) -> bytes:
    """File bytes; formats other than JPEG/PNG/WebP are re-encoded as PNG."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.OpError as e:   # "<path>; No such file or directory"
        cause = e.message.rsplit("; ", 1)[-1]
        raise FileNotFoundError(f"{where}: cannot read image {path!r} ({cause})") from None
    if schema.sniff_image_format(data) is not None:
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        return encode_image(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), "png")
    except (UnidentifiedImageError, OSError):
        return data  # not an image: the writer's image check reports and skips it


def _check_encodable(text: str, where: str) -> None:
    """Raises ValueError naming `where` if `text` cannot be written as UTF-8 (a lone surrogate
    from a JSON escape such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} is not valid Unicode text ({e.reason} at character "
                         f"{e.start}: {text[max(e.start - 20, 0):e.start]!r}...); fix the "
                         "source text") from None


def _decoded_lines(path: str):
    """(1-based line number, text line with its line end) of a UTF-8 file; a line that is not
    UTF-8 raises ValueError naming the file and line (not a byte offset of a read buffer)."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"{path}: no such table file")
    with tf.io.gfile.GFile(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {i}: not UTF-8 text (byte {raw[e.start:e.end]!r} "
                                 f"at column {e.start}); re-save the file as UTF-8") from None


def _table_rows(path: str, ext: str):
    """(1-based data row number, dict) for each CSV data row / JSONL line."""
    lines = _decoded_lines(path)
    if ext == ".csv":
        line_number = [0]

        def text():
            for line_number[0], line in lines:
                yield line

        reader = csv.DictReader(text())
        for i in itertools.count(1):
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise ValueError(f"{path} row {i} (line {line_number[0]}): not a valid CSV row "
                                 f"({e}; a field holds at most {csv.field_size_limit()} "
                                 "bytes)") from None
            yield i, row
    else:
        for i, line in lines:
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {i}: not valid JSON ({e.msg})") from None

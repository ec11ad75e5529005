"""What a set of basic_tf shards holds: record count, image sizes and channels, class names,
captions. tools/new_experiment.py sizes an experiment from it.

Images are measured from their file headers (Pillow opens lazily, no pixel decode), so profiling
a shard costs about one read of it.
"""
import collections
import dataclasses
import io
import statistics
from typing import Dict, List, Optional, Sequence, Union

from basic_tf.data import img2dataset, schema, validate

# Pillow mode -> channels of the stored file (the pipeline always decodes to 3).
MODE_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "I;16": 1, "LA": 2, "RGB": 3,
                 "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "CMYK": 4}


@dataclasses.dataclass
class DataProfile:
    """The summary of some shards.

    heights / widths: int per record (pixels). modes: Pillow mode -> records ('L' is grayscale).
    class_names: label -> label name (a label without a name maps to ''). captions: every caption
    of every record (what a tokenizer trains on). class_captions: label name -> the captions of
    its records. labelled: records with a label.
    """
    file_pattern: Union[str, Sequence[str]]
    shards: List[str]
    records: int
    heights: List[int]
    widths: List[int]
    modes: Dict[str, int]
    formats: Dict[str, int]
    class_names: Dict[int, str]
    labelled: int
    captions: List[str]
    class_captions: Dict[str, List[str]]
    record_format: str = "basic_tf"   # or "img2dataset" (basic_tf.data.img2dataset)
    unreadable: int = 0               # records skipped: no image or caption, unreadable image

    @property
    def channels(self) -> Dict[int, int]:
        """Channels of the stored files -> records (grayscale 1, RGB 3, RGBA 4)."""
        out = collections.Counter()
        for mode, n in self.modes.items():
            out[MODE_CHANNELS.get(mode, 3)] += n
        return dict(out)

    def shorter_side(self) -> int:
        """The median over records of the image's shorter side, in pixels."""
        return int(statistics.median(min(h, w) for h, w in zip(self.heights, self.widths)))

    def ordered_class_names(self) -> List[str]:
        """Class names in label order 0..K-1. Raises ValueError naming the first label that has
        no record or no name (zero-shot classification needs a name for every label)."""
        if not self.class_names:
            return []
        for label in range(max(self.class_names) + 1):
            if label not in self.class_names:
                raise ValueError(f"{self.file_pattern}: label {label} has no record (labels "
                                 f"present: {sorted(self.class_names)}); labels must be 0..K-1")
            if not self.class_names[label]:
                raise ValueError(f"{self.file_pattern}: records with label {label} carry no "
                                 f"'{schema.LABEL_NAME_KEY}'; write them with class names "
                                 "(tools/make_tfrecords.py --class_names_file)")
        return [self.class_names[label] for label in range(len(self.class_names))]

    def describe(self) -> str:
        """A few lines for people (and for the comments of a generated gin file)."""
        sides = f"{min(self.heights)}..{max(self.heights)} x {min(self.widths)}..{max(self.widths)}"
        modes = ", ".join(f"{mode} {n}" for mode, n in sorted(self.modes.items()))
        per_record = len(self.captions) / max(self.records, 1)
        fmt = "" if self.record_format == "basic_tf" else f" ({self.record_format} layout)"
        if self.unreadable:
            fmt += (f"; {self.unreadable} records skipped (no image, no caption or an image "
                    "header Pillow cannot read)")
        lines = [f"{self.records} records in {len(self.shards)} shard(s){fmt}",
                 f"images (height x width): {sides} pixels, median shorter side "
                 f"{self.shorter_side()}; Pillow modes: {modes}",
                 f"captions: {per_record:.1f} per record, "
                 f"{len(set(self.captions))} distinct"]
        if self.class_names:
            names = [self.class_names[k] for k in sorted(self.class_names)]
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            lines.append(f"{len(names)} classes ({self.labelled} labelled records): {shown}")
        else:
            lines.append("no labels (image-text pairs only)")
        return "\n".join(lines)


def _header(image: bytes) -> tuple:
    """(height, width, mode) from the image file's header."""
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        return img.height, img.width, img.mode


def profile_shards(file_pattern: Union[str, Sequence[str]],
                   max_records: Optional[int] = None) -> DataProfile:
    """Reads every record (or the first `max_records`) of the shards matching `file_pattern`.

    The record format (basic_tf or img2dataset) is told from the first shard's first record.
    Raises FileNotFoundError (no shard), ValueError (a truncated shard) or schema.SchemaError (a
    record off the schema), each naming the shard and record; img2dataset records without
    image or caption (failed downloads) and images whose header Pillow cannot read are counted
    in `unreadable` instead.
    """
    shards = schema.list_shards(file_pattern)
    record_format = img2dataset.detect_record_format(shards[0])
    unreadable = 0

    def read(shard):
        nonlocal unreadable
        if record_format == "basic_tf":
            yield from validate.read_records(shard)
            return
        for record in img2dataset.read_records(shard):
            if isinstance(record, schema.SkippedSource):
                unreadable += record.count
            else:
                yield record

    heights, widths, captions = [], [], []
    modes, formats = collections.Counter(), collections.Counter()
    class_names: Dict[int, str] = {}
    class_captions = collections.defaultdict(list)
    labelled = records = 0
    for shard in shards:
        if max_records is not None and records >= max_records:
            break
        for record in read(shard):
            if max_records is not None and records >= max_records:
                break
            try:
                height, width, mode = _header(record.image)
            except Exception:  # Pillow raises many types on a corrupt or cut image
                unreadable += 1  # the pipeline skips it as bad_image
                continue
            records += 1
            heights.append(height)
            widths.append(width)
            modes[mode] += 1
            formats[record.image_format] += 1
            captions.extend(record.captions)
            if record.label is not None:
                labelled += 1
                name = record.label_name or ""
                known = class_names.setdefault(record.label, name)
                if known != name:
                    raise ValueError(f"{shard}: record {record.example_id!r} names label "
                                     f"{record.label} {name!r}, an earlier record {known!r}")
                class_captions[name].extend(record.captions)
    if not records:
        raise ValueError(f"{file_pattern}: the shards hold no record")
    return DataProfile(file_pattern, shards, records, heights, widths, dict(modes),
                       dict(formats), class_names, labelled, captions, dict(class_captions),
                       record_format, unreadable)

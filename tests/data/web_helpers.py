"""Web-scale test data made in the tests (nothing downloaded): img2dataset-layout TFRecords with
metadata columns of flipping type, and webdataset tars (tarfile + Pillow)."""
import io
import json
import os
import tarfile

import tensorflow as tf

from data_helpers import COLOURS, jpeg_bytes, png_bytes, random_image, webp_bytes

FORMATS = ("jpg", "png", "webp", "jpeg")


def image_bytes(i: int, ext: str, size=(20, 24)) -> bytes:
    array = random_image(i, *size)
    if ext in ("jpg", "jpeg"):
        return jpeg_bytes(array)
    return png_bytes(array) if ext == "png" else webp_bytes(array, lossless=False)


def caption(i: int) -> str:
    return f"a {COLOURS[i % len(COLOURS)]} thing number {i}"


def img2dataset_example(i: int, ext: str = "jpg", text=None, fields=None) -> bytes:
    """One record as img2dataset's tfrecord writer lays it out: key, the image under its
    format's key, txt, then metadata columns; `width` is an int64 in even records and empty
    bytes in odd ones (a column that is sometimes empty), `status` bytes. `fields` overrides or
    (value None) removes features."""
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feature = {"key": b(f"{i:09d}".encode()), ext: b(image_bytes(i, ext)),
               "txt": b((caption(i) if text is None else text).encode()),
               "url": b(f"http://example.com/{i}.{ext}".encode()), "status": b(b"success"),
               "width": (tf.train.Feature(int64_list=tf.train.Int64List(value=[24]))
                         if i % 2 == 0 else b(b"")),
               "caption": b(b"") if i % 3 else tf.train.Feature(
                   int64_list=tf.train.Int64List(value=[7]))}
    for key, value in (fields or {}).items():
        if value is None:
            feature.pop(key, None)
        else:
            feature[key] = value if isinstance(value, tf.train.Feature) else b(value)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_img2dataset_shard(path: str, rows, successes=None) -> str:
    """`rows`: serialized examples. Writes `<stem>_stats.json` with "successes" (default
    len(rows)), as img2dataset does."""
    with tf.io.TFRecordWriter(path) as w:
        for r in rows:
            w.write(r)
    stem = path[:-len(".tfrecord")]
    with open(stem + "_stats.json", "w") as f:
        json.dump({"count": len(rows), "successes": len(rows) if successes is None
                   else successes, "failed_to_download": 0}, f)
    return path


def write_tar(path: str, members) -> str:
    """A tar of (name, bytes) members in the given order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def pair_members(i: int, ext: str = "jpg", text=None, meta=None):
    """The members of one webdataset sample: <key>.<ext>, <key>.txt, <key>.json."""
    key = f"{i:09d}"
    meta = {"url": f"http://example.com/{i}", "width": 24} if meta is None else meta
    return [(f"{key}.{ext}", image_bytes(i, ext)),
            (f"{key}.txt", (caption(i) if text is None else text).encode()),
            (f"{key}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode())]


def write_tars(folder: str, n_tars: int, per_tar: int, sizes=True) -> list:
    """n_tars tars `<folder>/{00000..}.tar` of per_tar pairs with formats mixed (jpg, png,
    webp, jpeg), and sizes.json as img2dataset/open_clip lay them out."""
    os.makedirs(folder, exist_ok=True)
    paths, counts = [], {}
    for t in range(n_tars):
        members = []
        for j in range(per_tar):
            i = t * per_tar + j
            members += pair_members(i, FORMATS[i % len(FORMATS)])
        path = write_tar(os.path.join(folder, f"{t:05d}.tar"), members)
        paths.append(path)
        counts[os.path.basename(path)] = per_tar
    if sizes:
        with open(os.path.join(folder, "sizes.json"), "w") as f:
            json.dump(counts, f)
    return paths

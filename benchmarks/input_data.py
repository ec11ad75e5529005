"""The files the input_pipeline figure reads, written in the benchmark (nothing downloaded).

Two kinds of image sets (child side: imports TensorFlow):
  demo       the demo's records exactly as `basic-demo` writes them (basic_tf.demo.write_split:
             28x28 grayscale PNG stored as RGB, every training template x the class name as
             captions, one shard) from the Debian package's Fashion-MNIST when it is installed,
             else from smooth random 28x28 images; the demo's SentencePiece model (256 pieces).
  realistic  `n` photo-like images (smooth colour fields + texture + noise, so encoded sizes are
             those of photos: about 20-30 KB at 256 px JPEG quality 95) per size (256, 384 px)
             and format (JPEG, WebP; quality 95 as img2dataset's encode_quality default), each
             written three ways from the same encoded bytes:
               tars         webdataset tars `<key>.jpg|.webp` + `.txt` + `.json`, with sizes.json
                            (what img2dataset --output_format webdataset writes)
               img2dataset  img2dataset's TFRecord layout (basic_tf/data/img2dataset.py: key,
                            the image under its extension, txt, metadata columns) + _stats.json
               basic_tf     the tars converted by basic_tf.data.webdataset.convert_tars (what
                            basic-make-tfrecords --source=webdataset runs): our schema.
"""
import io
import json
import os
import tarfile

import numpy as np

WORDS = ["red", "small", "dog", "car", "tree", "blue", "house", "on", "a", "the", "near",
         "photo", "of", "old", "green", "boat", "river", "big", "cat", "sky", "with", "two"]
PER_SHARD = 128  # samples per tar / img2dataset shard (img2dataset's default is 10,000)


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: low-frequency colour field + mid-frequency texture + pixel noise,
    so JPEG/WebP sizes and decode costs are near a photo's (a flat synthetic image decodes
    faster than any real one)."""
    from PIL import Image

    def field(cells, amplitude):
        low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        up = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        return (np.asarray(up, np.float32) - 128.0) * amplitude

    image = 128.0 + field(4, 0.9) + field(24, 0.35) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, ext: str, quality: int = 95) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(image).save(out, {"jpg": "JPEG", "webp": "WEBP"}[ext], quality=quality)
    return out.getvalue()


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, 10))


def write_tars(folder: str, samples: list, ext: str) -> str:
    """samples: (key, image bytes, caption) -> tars of PER_SHARD samples + sizes.json; returns
    the tars' glob."""
    os.makedirs(folder, exist_ok=True)
    sizes = {}
    for t in range(0, len(samples), PER_SHARD):
        name = f"{t // PER_SHARD:05d}.tar"
        chunk = samples[t:t + PER_SHARD]
        with tarfile.open(os.path.join(folder, name), "w") as tar:
            for key, image, text in chunk:
                meta = json.dumps({"key": key, "url": f"http://example.com/{key}.{ext}",
                                   "caption": text, "status": "success"}).encode()
                for suffix, data in ((ext, image), ("txt", text.encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        sizes[name] = len(chunk)
    with open(os.path.join(folder, "sizes.json"), "w") as f:
        json.dump(sizes, f)
    return os.path.join(folder, "*.tar")


def write_img2dataset(folder: str, samples: list, ext: str) -> str:
    """The same samples in img2dataset's TFRecord layout (+ <shard>_stats.json); returns the
    shards' glob."""
    import tensorflow as tf

    def b(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    os.makedirs(folder, exist_ok=True)
    for t in range(0, len(samples), PER_SHARD):
        stem = os.path.join(folder, f"{t // PER_SHARD:05d}")
        chunk = samples[t:t + PER_SHARD]
        with tf.io.TFRecordWriter(stem + ".tfrecord") as w:
            for key, image, text in chunk:
                feature = {"key": b(key.encode()), ext: b(image), "txt": b(text.encode()),
                           "url": b(f"http://example.com/{key}.{ext}".encode()),
                           "status": b(b"success"), "error_message": b(b""),
                           "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feature))
                        .SerializeToString())
        with open(stem + "_stats.json", "w") as f:
            json.dump({"count": len(chunk), "successes": len(chunk)}, f)
    return os.path.join(folder, "*.tfrecord")


def realistic_set(work: str, size: int, ext: str, n: int, seed: int = 0) -> dict:
    """Writes one image set three ways (module doc). Returns {"name", "images" (list of encoded
    bytes), "bytes_mean", "tars", "img2dataset", "basic_tf", "captions"}."""
    from basic_tf.data import webdataset

    rng = np.random.default_rng(seed + size)
    samples = [(f"{i:09d}", encode(photo_like(rng, size), ext), caption(rng)) for i in range(n)]
    folder = os.path.join(work, f"{size}_{ext}")
    tars = write_tars(os.path.join(folder, "tars"), samples, ext)
    i2d = write_img2dataset(os.path.join(folder, "img2dataset"), samples, ext)
    prefix = os.path.join(folder, "basic_tf", "train")
    summary = webdataset.convert_tars(webdataset.list_tars(tars), prefix, check_images=False)
    if summary["written"] != n:
        raise RuntimeError(f"convert_tars wrote {summary['written']} of {n}: {summary}")
    return {"name": f"{size}px {ext}", "images": [s[1] for s in samples],
            "bytes_mean": int(np.mean([len(s[1]) for s in samples])), "tars": tars,
            "img2dataset": i2d, "basic_tf": prefix + "-*.tfrecord",
            "captions": [s[2] for s in samples]}


def demo_set(work: str, n: int) -> dict:
    """The demo's own records (module doc); gin's demo config must be parsed (the captions are
    its caption_templates). Returns {"name", "images", "bytes_mean", "basic_tf",
    "tokenizer_path", "source"}."""
    from basic_tf import demo
    from basic_tf.data import fashion_mnist, schema

    if fashion_mnist.available():
        images, labels = fashion_mnist.load("train")
        images, labels, source = images[:n], labels[:n], "Fashion-MNIST (Debian package)"
    else:
        rng = np.random.default_rng(0)
        low = rng.integers(0, 256, (n, 7, 7)).astype(np.uint8)
        images = np.kron(low, np.ones((1, 4, 4), np.uint8))
        labels, source = rng.integers(0, 10, n), "smooth random 28x28 (no Fashion-MNIST)"
    prefix = os.path.join(work, "demo", "train")
    shards = demo.write_split(images, labels, fashion_mnist.CLASS_NAMES, prefix, "png")
    tokenizer_path = demo.train_tokenizer(fashion_mnist.CLASS_NAMES,
                                          os.path.join(work, "demo", "spm"), 256)
    import tensorflow as tf
    encoded = [schema.decode_record(r).image for s in shards
               for r in tf.data.TFRecordDataset(s).as_numpy_iterator()]
    return {"name": "demo (28px png)", "images": encoded,
            "bytes_mean": int(np.mean([len(b) for b in encoded])),
            "basic_tf": prefix + "-*.tfrecord", "tokenizer_path": tokenizer_path,
            "source": source}


def train_tokenizer(captions: list, prefix: str, vocab_size: int = 200) -> str:
    from basic_tf.data import tokenizer
    return tokenizer.train_sentencepiece(captions, prefix, vocab_size)

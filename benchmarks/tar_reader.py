"""Experiment (issue 22 item 2): webdataset tars read directly by tf.data, graph ops only.

    tar paths -> per tar (interleaved): FixedLengthRecordDataset of 512-byte blocks, batched
    into 64 KB chunks (+ one end element) -> scan: append the chunk to a carry buffer, walk
    every whole member in a while loop (ustar header: name at 0..100 + prefix at 345..500,
    octal size at 124..136, type at 156; data padded to 512) and pair consecutive members by
    key (the name up to the first dot of its file name) -> samples (key, image bytes, caption)

No py_function: the scan's state is the carry buffer (at most a chunk plus one member) and the
sample being assembled, so the position is in the iterator's checkpoint like any tf.data
reader's. What it does not do (the converted shards do): the accounting of
basic_tf.data.pipeline (a truncated tar's lost members, unpaired members, bad JSON and
non-UTF-8 captions counted by cause: here they are dropped silently), a tar cut at a length
that is not a multiple of 512 bytes (FixedLengthRecordDataset refuses the whole file: the
pipeline stops), pax extended headers (long names; treated as unknown members), de-duplication
and caption cleaning (writer), stats sidecars. It is here to measure whether reading tars
directly is worth it: it is not (benchmarks/README.md, "Tars directly").
"""
import tensorflow as tf

BLOCK = 512
CHUNK_BLOCKS = 128  # 64 KB per scan step
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _octal(field: tf.Tensor) -> tf.Tensor:
    """ustar numeric field tf.string [] (ASCII octal digits, padded by spaces / NUL) -> int64."""
    b = tf.cast(tf.io.decode_raw(field, tf.uint8), tf.int64)
    digit = (b >= 48) & (b <= 55)
    after = tf.cumsum(tf.cast(digit, tf.int64), reverse=True, exclusive=True)
    weights = tf.bitwise.left_shift(tf.constant(1, tf.int64), 3 * after)
    return tf.reduce_sum(tf.where(digit, (b - 48) * weights, 0))


def _c_string(field: tf.Tensor) -> tf.Tensor:
    """NUL-terminated field -> the text before the first NUL."""
    return tf.strings.split(field, "\x00", maxsplit=1)[0]


def _header(b: tf.Tensor, pos: tf.Tensor):
    """The member whose header starts at byte `pos` of `b` -> (name, data size int64,
    total length header + padded data int64, is a regular file)."""
    header = tf.strings.substr(b, pos, BLOCK)
    size = _octal(tf.strings.substr(header, 124, 12))
    name = _c_string(tf.strings.substr(header, 0, 100))
    prefix = _c_string(tf.strings.substr(header, 345, 155))
    ustar = tf.strings.substr(header, 257, 5) == "ustar"
    name = tf.where(ustar & (tf.strings.length(prefix) > 0),
                    tf.strings.join([prefix, name], "/"), name)
    kind = tf.strings.substr(header, 156, 1)
    regular = ((kind == "0") | (kind == "\x00")) & (tf.strings.length(name) > 0)
    return name, size, BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK, regular


def _key_ext(name: tf.Tensor):
    """Member path -> (key, lower-case extension): the key ends at the first dot of the file
    name (webdataset's __key__)."""
    key = tf.strings.regex_replace(name, r"^((?:.*/)?[^/.]*)\..*$", r"\1")
    ext = tf.strings.lower(tf.strings.regex_replace(name, r"^(?:.*/)?[^/.]*\.?", ""))
    return key, ext


_EMPTY = {"key": "", "image": "", "caption": "", "has_txt": False}


def _cut_samples(buf: tf.Tensor, sample: dict, end: tf.Tensor):
    """Walks the whole members at the front of `buf`, adding each to the sample being
    assembled (`sample`: key, image, caption, has_txt); a member of another key finishes it.
    end: the tar's end, so the sample being assembled is finished too.
    -> (the bytes after the last whole member, the sample being assembled, finished samples
    {"key", "image", "caption"} [k] that had an image and a .txt)."""
    length = tf.cast(tf.strings.length(buf), tf.int64)
    arrays = {k: tf.TensorArray(tf.string, size=0, dynamic_size=True)
              for k in ("key", "image", "caption")}
    whole = tf.TensorArray(tf.bool, size=0, dynamic_size=True)

    def more(pos, *_):
        return tf.cond(length - pos >= BLOCK, lambda: _header(buf, pos)[2] <= length - pos,
                       lambda: tf.constant(False))

    def member(pos, i, cur, arrays, whole):
        name, size, total, regular = _header(buf, pos)
        key, ext = _key_ext(name)
        new = regular & (key != cur["key"])
        finished = new & (tf.strings.length(cur["key"]) > 0)
        arrays = {k: arrays[k].write(i, cur[k]) for k in arrays}
        whole = whole.write(i, finished & (tf.strings.length(cur["image"]) > 0)
                            & cur["has_txt"])
        base = {k: tf.where(new, tf.constant(_EMPTY[k]), v) for k, v in cur.items()}
        data = tf.strings.substr(buf, pos + BLOCK, size)
        is_image = regular & tf.reduce_any(tf.equal(ext, IMAGE_EXTENSIONS))
        is_txt = regular & (ext == "txt")
        cur = {"key": tf.where(regular, key, base["key"]),
               "image": tf.where(is_image, data, base["image"]),
               "caption": tf.where(is_txt, data, base["caption"]),
               "has_txt": base["has_txt"] | is_txt}
        return pos + total, i + 1, cur, arrays, whole

    pos, i, sample, arrays, whole = tf.while_loop(
        more, member, (tf.constant(0, tf.int64), tf.constant(0), sample, arrays, whole))
    arrays = {k: arrays[k].write(i, sample[k]) for k in arrays}   # the tar's last sample
    whole = whole.write(i, end & (tf.strings.length(sample["image"]) > 0) & sample["has_txt"])
    keep = whole.stack()
    return (tf.strings.substr(buf, pos, -1), sample,
            {k: tf.boolean_mask(a.stack(), keep) for k, a in arrays.items()})


def tar_samples(path: tf.Tensor) -> tf.data.Dataset:
    """One tar's whole samples {"key", "image", "caption"} (tf.string []), in tar order; a
    member cut short by the tar's end is lost with its sample."""
    blocks = tf.data.FixedLengthRecordDataset(path, BLOCK, buffer_size=1 << 18)
    chunks = blocks.batch(CHUNK_BLOCKS).map(lambda c: (tf.strings.reduce_join(c), False))
    chunks = chunks.concatenate(tf.data.Dataset.from_tensors((tf.constant(""), True)))

    def step(state, chunk_end):
        chunk, end = chunk_end
        buf, sample = state
        rest, sample, done = _cut_samples(tf.strings.join([buf, chunk]), sample, end)
        return (rest, sample), done

    start = (tf.constant(""), {k: tf.constant(v) for k, v in _EMPTY.items()})
    return chunks.scan(start, step).unbatch()


def read_tars(paths, cycle_length: int = 8) -> tf.data.Dataset:
    """Samples of all tars, `cycle_length` tars read at once (as make_dataset's shards)."""
    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    return ds.interleave(tar_samples, cycle_length=min(cycle_length, len(paths)),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

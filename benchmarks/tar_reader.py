"""Experiment (issue 22 item 2): webdataset tars read directly by tf.data, graph ops only.

    tar paths -> per tar (interleaved): FixedLengthRecordDataset of 512-byte blocks, batched
    into 64 KB chunks -> scan: append the chunk to a carry buffer, cut every whole member
    (ustar header: name at 0..100 + prefix at 345..500, octal size at 124..136, type at 156;
    data padded to 512) -> members (name, bytes) -> scan: pair consecutive members by key
    (the name up to the first dot of its file name) -> samples (key, image bytes, caption)

No py_function: the scans' state is the carry buffer (at most a chunk plus one member) and the
sample being assembled, so the position is in the iterator's checkpoint like any tf.data
reader's. What it does not do (the converted shards do): the accounting of
basic_tf.data.pipeline (a truncated tar's lost members, unpaired members, bad JSON and
non-UTF-8 captions counted by cause), pax extended headers (long names; treated as unknown
members), de-duplication and caption cleaning (writer), stats sidecars. It is here to measure
whether reading tars directly is worth it; see benchmarks/README.md.
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


def _cut_members(buf: tf.Tensor):
    """Cuts whole members off the front of `buf` -> (rest, names [k], data [k], regular [k])."""
    names = tf.TensorArray(tf.string, size=0, dynamic_size=True)
    datas = tf.TensorArray(tf.string, size=0, dynamic_size=True)
    regular = tf.TensorArray(tf.bool, size=0, dynamic_size=True)

    def member_length(b):
        header = tf.strings.substr(b, 0, BLOCK)
        size = _octal(tf.strings.substr(header, 124, 12))
        return BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK, size, header

    def whole_member_ahead(b, *_):
        length = tf.cast(tf.strings.length(b), tf.int64)
        return tf.cond(length >= BLOCK, lambda: member_length(b)[0] <= length,
                       lambda: tf.constant(False))

    def cut(b, i, names, datas, regular):
        total, size, header = member_length(b)
        name = _c_string(tf.strings.substr(header, 0, 100))
        prefix = _c_string(tf.strings.substr(header, 345, 155))
        ustar = tf.strings.substr(header, 257, 5) == "ustar"
        name = tf.where(ustar & (tf.strings.length(prefix) > 0),
                        tf.strings.join([prefix, name], "/"), name)
        kind = tf.strings.substr(header, 156, 1)
        is_file = ((kind == "0") | (kind == "\x00")) & (tf.strings.length(name) > 0)
        data = tf.strings.substr(b, BLOCK, tf.cast(size, tf.int32))
        return (tf.strings.substr(b, tf.cast(total, tf.int32), -1), i + 1,
                names.write(i, name), datas.write(i, data), regular.write(i, is_file))

    buf, _, names, datas, regular = tf.while_loop(
        whole_member_ahead, cut, (buf, tf.constant(0), names, datas, regular))
    return buf, names.stack(), datas.stack(), regular.stack()


def tar_members(path: tf.Tensor) -> tf.data.Dataset:
    """One tar's regular-file members as {"name", "data"} (tf.string []), then one end element
    {"name": "", "data": ""}; a member cut short by the tar's end is not emitted."""
    blocks = tf.data.FixedLengthRecordDataset(path, BLOCK, buffer_size=1 << 18)
    chunks = blocks.batch(CHUNK_BLOCKS).map(lambda c: tf.strings.reduce_join(c))

    def step(buf, chunk):
        rest, names, datas, regular = _cut_members(tf.strings.join([buf, chunk]))
        return rest, {"name": tf.boolean_mask(names, regular),
                      "data": tf.boolean_mask(datas, regular)}

    members = chunks.scan(tf.constant(""), step).unbatch()
    return members.concatenate(tf.data.Dataset.from_tensors(
        {"name": tf.constant(""), "data": tf.constant("")}))


def _key_ext(name: tf.Tensor):
    key = tf.strings.regex_replace(name, r"^((?:.*/)?[^/.]*)\..*$", r"\1")
    ext = tf.strings.lower(tf.strings.regex_replace(name, r"^(?:.*/)?[^/.]*\.?", ""))
    return key, ext


def _pair(state, member):
    """Scan: members in tar order -> at each key change (or the end element), the finished
    sample {"key", "image", "caption", "whole"}; whole = it had an image and a .txt."""
    key, ext = _key_ext(member["name"])
    new = key != state["key"]
    done = new & (tf.strings.length(state["key"]) > 0)
    out = {"key": state["key"], "image": state["image"], "caption": state["caption"],
           "whole": done & (tf.strings.length(state["image"]) > 0) & state["has_txt"]}
    base = {k: tf.where(new, tf.zeros_like(v), v) for k, v in state.items()}
    is_image = tf.reduce_any(tf.equal(ext, IMAGE_EXTENSIONS))
    nxt = {"key": key, "image": tf.where(is_image, member["data"], base["image"]),
           "caption": tf.where(ext == "txt", member["data"], base["caption"]),
           "has_txt": base["has_txt"] | (ext == "txt")}
    return nxt, out


def tar_samples(path: tf.Tensor) -> tf.data.Dataset:
    """One tar's whole samples {"key", "image", "caption"} (tf.string []), in tar order."""
    start = {"key": tf.constant(""), "image": tf.constant(""), "caption": tf.constant(""),
             "has_txt": tf.constant(False)}
    samples = tar_members(path).scan(start, _pair).filter(lambda s: s["whole"])
    return samples.map(lambda s: {k: s[k] for k in ("key", "image", "caption")})


def read_tars(paths, cycle_length: int = 8) -> tf.data.Dataset:
    """Samples of all tars, `cycle_length` tars read at once (as make_dataset's shards)."""
    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    return ds.interleave(tar_samples, cycle_length=min(cycle_length, len(paths)),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

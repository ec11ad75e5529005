"""webdataset tars (what img2dataset writes for LAION, COYO, CC3M/CC12M, DataComp) as records.

A tar holds samples as consecutive members sharing a key: `<key>.jpg` (or .jpeg, .png, .webp;
DataComp mixes formats in one tar) + `<key>.txt` (the caption) + `<key>.json` (metadata). The
key (webdataset's `__key__`: the member path up to the first dot of its file name) becomes the
example id, the json text the record's metadata. `sizes.json` in a tar's folder ({tar file
name: samples}, as open_clip reads it) or img2dataset's `<tar stem>_stats.json` ("successes")
say how many samples a tar should hold; fewer are counted as missing.

Nothing bad stops a conversion: each problem becomes a `schema.SkippedSource` naming the tar
and member, counted by cause (`SKIP_CAUSES`) in the writer's summary:
  unpaired       a member without its image or its .txt (named: tar, member)
  bad_json       a .json member that is not JSON (the pair is skipped: its metadata is lost)
  bad_text       a .txt member that is not UTF-8
  truncated_tar  a tar cut mid-member (the samples after the cut are lost; counted from the
                 expected count when one is known, else 1 for the cut sample)
  missing        samples `sizes.json` / stats promise and the tar does not hold
An empty .txt is passed on: the writer skips it as "no non-empty caption". A shard list naming
a file that does not exist raises FileNotFoundError naming it, before anything is converted.

Training reads the converted shards: tf.data has no tar reader, and a from_generator reader runs
the whole read in one Python thread and cannot checkpoint its position (README, "Web-scale
data").
"""
import json
import os
import posixpath
import re
import tarfile
from typing import Dict, Iterator, List, Optional, Sequence

import tensorflow as tf

from basic_tf.data import schema

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SKIP_CAUSES = ("unpaired", "bad_json", "bad_text", "truncated_tar", "missing")
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> List[str]:
    """'a/{00000..00002}.tar' -> ['a/00000.tar', 'a/00001.tar', 'a/00002.tar']; '{a,b}' lists
    too, several groups multiply (as webdataset's braceexpand). Zero padding follows the range's
    first bound."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    bounds = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if bounds:
        first, last = bounds.groups()
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        parts = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        parts = body.split(",")
    return [head + part + rest for part in parts for rest in expand_braces(tail)]


def list_tars(patterns: str, flag: str = "--input") -> List[str]:
    """Tar paths from brace ranges and globs (several patterns joined by '::', as open_clip).
    Raises FileNotFoundError naming `flag`, then the first named file that does not exist or a
    glob that matches nothing (before any tar is read)."""
    out = []
    for pattern in patterns.split("::"):
        for path in expand_braces(pattern):
            if any(c in path for c in "*?["):
                matched = sorted(tf.io.gfile.glob(path))
                if not matched:
                    raise FileNotFoundError(f"{flag}: glob {path!r} (from {pattern!r}) "
                                            "matches no tar")
                out.extend(matched)
            elif not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{flag}: tar {path!r} (from {pattern!r}) does not "
                                        "exist; fix the list or the brace range")
            else:
                out.append(path)
    if not out:
        raise FileNotFoundError(f"{flag}={patterns!r} names no tar")
    return out


def expected_counts(tars: Sequence[str]) -> Dict[str, int]:
    """tar path -> samples it should hold, from `sizes.json` beside it or img2dataset's
    `<stem>_stats.json`; tars with neither are left out."""
    counts, sizes_files = {}, {}
    for tar in tars:
        folder, name = posixpath.split(tar) if "://" in tar else os.path.split(tar)
        if folder not in sizes_files:
            sizes_files[folder] = _read_json(os.path.join(folder, "sizes.json")) or {}
        if name in sizes_files[folder]:
            counts[tar] = int(sizes_files[folder][name])
            continue
        stats = _read_json(tar[:-len(".tar")] + "_stats.json" if tar.endswith(".tar") else "")
        if stats and "successes" in stats:
            counts[tar] = int(stats["successes"])
    return counts


def _read_json(path: str) -> Optional[dict]:
    if not path or not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except ValueError:
        return None


def _split_name(name: str) -> tuple:
    """Member path -> (key, extension): the key ends at the first dot of the file name."""
    folder, base = posixpath.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return posixpath.join(folder, stem), ext.lower()


def _sample_to_record(tar: str, key: str, members: Dict[str, tuple]):
    """One sample's members {extension: (member name, bytes)} -> Record or SkippedSource."""
    where = f"{tar} member {next(iter(members.values()))[0]}"
    image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    if image_ext is None or "txt" not in members:
        lacking = "an image (.jpg/.jpeg/.png/.webp)" if image_ext is None else "a .txt caption"
        return schema.SkippedSource(where, f"sample {key!r} has no {lacking} member beside "
                                    f"{sorted(m[0] for m in members.values())}", "unpaired")
    try:
        caption = members["txt"][1].decode("utf-8")
    except UnicodeDecodeError as e:
        return schema.SkippedSource(f"{tar} member {members['txt'][0]}",
                                    f"caption is not UTF-8 ({e.reason})", "bad_text")
    metadata = None
    if "json" in members:
        name, data = members["json"]
        try:
            json.loads(data)
        except ValueError as e:
            return schema.SkippedSource(f"{tar} member {name}", f"not JSON ({e})", "bad_json")
        metadata = data.decode("utf-8")
    return schema.Record(image=members[image_ext][1], captions=[caption], example_id=key,
                         metadata=metadata)


def from_tar(tar: str, expected: Optional[int] = None) -> Iterator:
    """The samples of one tar as schema.Records (SkippedSources for bad ones; see module doc).
    `expected`: samples it should hold (expected_counts), None if unknown."""
    samples, key, members, last = 0, None, {}, None
    try:
        with tf.io.gfile.GFile(tar, "rb") as f, tarfile.open(fileobj=f, mode="r|") as stream:
            for info in stream:
                if not info.isfile():
                    continue
                last = info.name
                member_key, ext = _split_name(info.name)
                if member_key != key and members:  # the previous sample is whole
                    samples += 1
                    yield _sample_to_record(tar, key, members)
                    members = {}
                key = member_key
                data = stream.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {info.name} is cut at {len(data)} of "
                                            f"{info.size} bytes")
                if ext in members:
                    yield schema.SkippedSource(f"{tar} member {info.name}", f"sample {key!r} "
                                               f"has a second .{ext} member", "unpaired")
                members[ext] = (info.name, data)
    except (tarfile.TarError, EOFError, OSError) as e:
        lost = 1 if expected is None else max(expected - samples, 1)
        yield schema.SkippedSource(f"{tar} member {last or '(first)'}",
                                   f"tar is cut or corrupt after it ({e}); {lost} sample(s) "
                                   "lost", "truncated_tar", count=lost)
        return
    if members:
        samples += 1
        yield _sample_to_record(tar, key, members)
    if expected is not None and samples < expected:
        yield schema.SkippedSource(tar, f"holds {samples} samples, sizes.json/stats say "
                                   f"{expected}", "missing", count=expected - samples)


def _convert_one(args) -> dict:
    """Worker: one tar -> shards `<output_prefix>-<tar stem>-XXXXX-of-NNNNN.tfrecord`; its
    WriteSummary as a dict."""
    tar, expected, output_prefix, write_kwargs = args
    from basic_tf.data import writer

    stem = os.path.basename(tar)
    stem = stem[:-len(".tar")] if stem.endswith(".tar") else stem
    summary = writer.write_tfrecords(from_tar(tar, expected), f"{output_prefix}-{stem}",
                                     show_progress=False, **write_kwargs)
    return summary.to_json()


def convert_tars(tars: Sequence[str], output_prefix: str, num_workers: int = 1,
                 **write_kwargs) -> dict:
    """Converts tars in parallel (one process per tar at a time, `num_workers` at once) into
    basic_tf shards `<output_prefix>-<tar stem>-*.tfrecord` (glob: `<output_prefix>-*.tfrecord`).

    Records are de-duplicated within a tar, not across tars. Returns the summed summary (also
    written to `<output_prefix>.summary.json`): WriteSummary's counts, "shards", and
    "skipped_sources" by cause (SKIP_CAUSES). write_kwargs go to writer.write_tfrecords.
    """
    counts = expected_counts(tars)
    jobs = [(tar, counts.get(tar), output_prefix, write_kwargs) for tar in tars]
    if num_workers > 1 and len(jobs) > 1:
        import concurrent.futures
        import multiprocessing

        # spawn: TensorFlow's threads do not survive a fork of a process that has used them.
        # A worker that dies (killed, out of memory) raises BrokenProcessPool here instead of
        # hanging the map as multiprocessing.Pool would.
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(num_workers, len(jobs)),
                                                    mp_context=spawn) as pool:
            results = list(pool.map(_convert_one, jobs))
    else:
        results = [_convert_one(job) for job in jobs]
    total = {"shards": [], "skipped_sources": {}, "tars": len(tars)}
    for result in results:
        for key, value in result.items():
            if key == "shards":
                total["shards"] += value
            elif key == "skipped_sources":
                for cause, n in value.items():
                    total["skipped_sources"][cause] = total["skipped_sources"].get(cause, 0) + n
            else:
                total[key] = total.get(key, 0) + value
    with tf.io.gfile.GFile(output_prefix + ".summary.json", "w") as f:
        json.dump(total, f, indent=1)
    return total

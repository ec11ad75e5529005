"""The input_pipeline figure without running it: its table from a payload of run()'s shape, and
the graph-only tar reader experiment (benchmarks/tar_reader.py) against basic_tf's Python tar
reader (basic_tf.data.webdataset.from_tar) on small tars."""
import io
import json
import tarfile

from basic_tf.data import webdataset


def _rate(pairs):
    return {"pairs_per_s": pairs, "per_core": pairs / 2, "seconds": 3.0}


def test_table_reports_ratios_to_the_limit_open_clip_and_the_bare_step():
    from benchmarks import input_pipeline
    demo = {"set": "demo (28px png)", "bytes_mean": 1000, "batch": 128,
            "raw_decode": _rate(10000.0), "make_dataset": _rate(5000.0), "ratio_to_raw": 0.5}
    jpg = {"set": "256px jpg", "bytes_mean": 30000, "batch": 64, "raw_decode": _rate(2000.0),
           "make_dataset": _rate(1400.0), "make_dataset_img2dataset": _rate(1300.0),
           "tars_direct": _rate(700.0), "shards_same_tail": _rate(1000.0),
           "open_clip": dict(_rate(200.0), workers=2), "ratio_to_raw": 0.7,
           "ratio_to_open_clip": 7.0, "tars_to_shards": 0.7}
    trainer = {"trainer": dict(_rate(900.0), threads="default"),
               "step": dict(_rate(1800.0), threads="intra1"),
               "trainer_by_threads": {"default": _rate(900.0)},
               "step_by_threads": {"intra1": _rate(1800.0)}, "batch": 128, "ratio": 0.5}
    text = input_pipeline.table({
        "cores": 2, "timed_batches": 12, "examples_per_set": 512, "image_size": 224,
        "seq_len": 32, "rows": [demo, jpg], "trainer": trainer, "open_clip_error": None,
        "load_average": {"start": 1.0, "end": 1.5}})
    assert "| demo (28px png) | 1,000 | 128 | 10000 (5000) | 5000 (2500) | 0.5x | - | - | - |" \
        in text
    assert ("| 256px jpg | 30,000 | 64 | 2000 (1000) | 1400 (700) | 0.7x | 1300 (650) | "
            "700 (350) vs 1000 (500) = 0.7x | 200 (100) | 7.0x |") in text
    assert "**0.5x**" in text and "load average 1.0 at the start, 1.5 at the end" in text


def _tar(path, members, cut_at=None):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    with open(path, "wb") as f:
        f.write(data if cut_at is None else data[:cut_at])
    return str(path)


def _sample(key, ext="jpg", size=700):
    image = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    return [(f"{key}.{ext}", image), (f"{key}.txt", f"caption {key}".encode()),
            (f"{key}.json", json.dumps({"key": key}).encode())]


def test_tar_reader_gives_the_samples_of_the_python_reader(tmp_path):
    from benchmarks import tar_reader
    members = (_sample("a/000") + _sample("001", "webp", 70000)[:2] + [("002.jpg", b"lonely")]
               + _sample("003", "png", 512) + _sample("004", size=0)[1:] + _sample("005"))
    whole = _tar(tmp_path / "whole.tar", members)
    # cut mid-member at a block boundary (FixedLengthRecordDataset refuses other lengths)
    cut = _tar(tmp_path / "cut.tar", _sample("100") + _sample("101", size=40000),
               cut_at=40 * 512)
    got = list(tar_reader.read_tars([whole, cut]).as_numpy_iterator())
    python = [r for t in (whole, cut) for r in webdataset.from_tar(t)
              if hasattr(r, "example_id")]
    assert sorted((g["key"].decode(), g["image"], g["caption"].decode()) for g in got) == sorted(
        (r.example_id, r.image, r.captions[0]) for r in python)
    assert sorted(g["key"].decode() for g in got) == ["001", "003", "005", "100", "a/000"]

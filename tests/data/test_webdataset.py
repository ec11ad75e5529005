"""webdataset tars -> basic_tf shards: brace ranges, pairs by key, sizes.json, and every bad
input (cut tar, unpaired member, bad json, empty txt, corrupt or oversized WebP, missing tar)
skipped and counted by cause or named in the first line of an error."""
import json

import pytest

from basic_tf.data import pipeline, schema, validate, webdataset, writer
from basic_tf.data.data_config import DataConfig
from data_helpers import webp_claiming
from web_helpers import caption, image_bytes, pair_members, write_tar, write_tars


def test_brace_ranges_lists_and_globs(tmp_path):
    assert webdataset.expand_braces("s/{00008..00011}.tar") == [
        "s/00008.tar", "s/00009.tar", "s/00010.tar", "s/00011.tar"]
    assert webdataset.expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar",
                                                            "b/2.tar"]
    paths = write_tars(str(tmp_path), 3, 2)
    assert webdataset.list_tars(str(tmp_path / "{00000..00002}.tar")) == paths
    assert webdataset.list_tars(str(tmp_path / "*.tar")) == paths


def test_missing_tar_in_the_list_is_named_first(tmp_path):
    write_tars(str(tmp_path), 2, 2)
    missing = str(tmp_path / "00002.tar")
    with pytest.raises(FileNotFoundError, match=f"^--input: tar '{missing}'"):
        webdataset.list_tars(str(tmp_path / "{00000..00002}.tar"))
    with pytest.raises(FileNotFoundError, match="matches no tar"):
        webdataset.list_tars(str(tmp_path / "nothing-*.tar"))


def test_samples_keep_key_caption_and_json(tmp_path):
    (path,) = write_tars(str(tmp_path), 1, 4)
    records = list(webdataset.from_tar(path, 4))
    assert [r.example_id for r in records] == [f"{i:09d}" for i in range(4)]
    assert [r.captions for r in records] == [[caption(i)] for i in range(4)]
    assert [r.image_format for r in records] == ["jpeg", "png", "webp", "jpeg"]
    assert json.loads(records[0].metadata)["url"] == "http://example.com/0"


def _causes(items):
    out = {}
    for item in items:
        if isinstance(item, schema.SkippedSource):
            out[item.cause] = out.get(item.cause, 0) + item.count
    return out


def test_bad_members_are_skipped_counted_and_named(tmp_path):
    members = (pair_members(0) + pair_members(1)[:1]                      # 1: image, no .txt
               + pair_members(2)[1:2]                                     # 2: .txt, no image
               + pair_members(3, meta=b"{not json")                       # 3: bad json
               + pair_members(4, text="   ")                              # 4: empty txt
               + [("000000005.webp", webp_claiming(12000, 12000))] + pair_members(5)[1:]
               + [("000000006.webp", b"RIFF\x20\x00\x00\x00WEBPVP8 garbage")]
               + pair_members(6)[1:] + pair_members(7)
               + [("000000008.webp", image_bytes(8, "webp")[:40])] + pair_members(8)[1:])
    path = write_tar(str(tmp_path / "bad.tar"), members)
    items = list(webdataset.from_tar(path, 9))
    assert _causes(items) == {"unpaired": 2, "bad_json": 1}
    named = [i.where for i in items if isinstance(i, schema.SkippedSource)]
    assert named[0] == f"{path} member 000000001.jpg" and "000000003.json" in named[2]
    summary = writer.write_tfrecords(items, str(tmp_path / "out"), show_progress=False)
    assert (summary.written, summary.empty_records, summary.too_large_images,
            summary.bad_images) == (2, 1, 1, 2)   # 6 corrupt, 8 truncated WebP
    assert summary.skipped_sources == {"unpaired": 2, "bad_json": 1}


def test_tar_cut_mid_member_counts_the_lost_samples(tmp_path):
    (path,) = write_tars(str(tmp_path), 1, 6)
    data = open(path, "rb").read()
    cut = data.index(b"000000003.jpeg") + 512 + 100  # inside sample 3's image data
    open(path, "wb").write(data[:cut])
    counts = webdataset.expected_counts([path])
    assert counts == {path: 6}
    items = list(webdataset.from_tar(path, counts[path]))
    good = [i for i in items if isinstance(i, schema.Record)]
    assert [r.example_id for r in good] == [f"{i:09d}" for i in range(3)]
    (cut_item,) = [i for i in items if isinstance(i, schema.SkippedSource)]
    assert cut_item.cause == "truncated_tar" and cut_item.count == 3
    assert cut_item.where.startswith(f"{path} member 000000003.jpeg")


def test_fewer_samples_than_sizes_json_are_counted_missing(tmp_path):
    (path,) = write_tars(str(tmp_path), 1, 3)
    json.dump({"00000.tar": 5}, open(tmp_path / "sizes.json", "w"))
    items = list(webdataset.from_tar(path, webdataset.expected_counts([path])[path]))
    assert _causes(items) == {"missing": 2}


def test_converted_tars_train(tmp_path, sp_model):
    write_tars(str(tmp_path / "tars"), 2, 5)
    total = webdataset.convert_tars(webdataset.list_tars(str(tmp_path / "tars/*.tar")),
                                    str(tmp_path / "out/train"))
    assert total["written"] == 10 and len(total["shards"]) == 2
    assert json.load(open(tmp_path / "out/train.summary.json"))["written"] == 10
    ds = pipeline.make_dataset(
        None, DataConfig(image_size=16, seq_len=10, tokenizer_path=sp_model), training=False,
        file_pattern=str(tmp_path / "out/train-*.tfrecord"), global_batch_size=4,
        log_skipped=False)
    ids = sorted(i.decode() for b in ds for i, m in zip(b["example_id"].numpy(),
                                                        b["mask"].numpy()) if m)
    assert ids == [f"{i:09d}" for i in range(10)]


def test_metadata_column_changing_type_is_kept_as_written(tmp_path):
    """img2dataset writes a sometimes-empty column as a number in one json and "" in the next;
    the json text is kept as it is, never parsed into typed columns."""
    metas = [{"width": 24, "url": "u0"}, {"width": "", "url": None}, {"width": [1], "url": 3}]
    members = [m for i, meta in enumerate(metas) for m in pair_members(i, meta=meta)]
    items = list(webdataset.from_tar(write_tar(str(tmp_path / "t.tar"), members), 3))
    assert [json.loads(r.metadata) for r in items] == metas
    summary = writer.write_tfrecords(items, str(tmp_path / "out"), show_progress=False)
    assert summary.written == 3
    shard = summary.shards[0]
    assert [json.loads(r.metadata) for r in validate.read_records(shard)] == metas

"""Faults of writing shards, each injected: a missing image is a counted skip naming the row
(strict: an error naming it), bad text names file and row/line, no .tmp shard survives a
failure, and captions/images are bounded at write time and reported by --validate."""
import csv
import json
import os

import pytest

from basic_tf.data import limits, schema, sources, validate, writer
from data_helpers import make_records, png_bytes, png_claiming, random_image, write_shard


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def images(tmp_path, n):
    for i in range(n):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(random_image(i)))
    return [f"{i}.png" for i in range(n)]


def write(records, tmp_path):
    return writer.write_tfrecords(records, str(tmp_path / "out" / "train"), show_progress=False)


def test_missing_image_is_a_counted_skip_naming_the_row(tmp_path, caplog):
    names = images(tmp_path, 2)
    table = write_jsonl(tmp_path / "t.jsonl", [{"image": names[0], "caption": "a"},
                                               {"image": "gone.png", "caption": "b"},
                                               {"image": names[1], "caption": "c"}])
    summary = write(sources.from_table(table), tmp_path)
    assert (summary.written, summary.unreadable_sources) == (2, 1)
    assert any("t.jsonl row 2" in m and "gone.png" in m for m in caplog.messages), caplog.messages
    with pytest.raises(FileNotFoundError, match=r"t.jsonl row 2: cannot read image .*gone.png"):
        write(sources.from_table(table, strict=True), tmp_path / "strict")
    assert not os.listdir(tmp_path / "strict" / "out")  # no .tmp shard, no summary


def test_unreadable_folder_image_is_a_counted_skip(tmp_path):
    root = tmp_path / "root" / "cat"
    root.mkdir(parents=True)
    (root / "0.png").write_bytes(png_bytes(random_image(0)))
    os.symlink(tmp_path / "nowhere.png", root / "1.png")  # a dangling link: cannot be read
    summary = write(sources.from_folder(str(tmp_path / "root"), ["{}"]), tmp_path)
    assert (summary.written, summary.unreadable_sources) == (1, 1)


def test_csv_field_over_the_csv_limit_names_file_and_row(tmp_path):
    names = images(tmp_path, 1)
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerow([names[0], "fine"])
        w.writerow([names[0], "x" * 200_000])
    with pytest.raises(ValueError, match=r"t.csv row 2 \(line 3\): not a valid CSV row"):
        list(sources.from_table(str(tmp_path / "t.csv")))


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_non_utf8_text_names_file_and_line(tmp_path, ext):
    names = images(tmp_path, 1)
    lines = ([b"image,caption\n", names[0].encode() + b",ok\n",
              names[0].encode() + b",caf\xe9 latin-1\n"] if ext == "csv" else
             [json.dumps({"image": names[0], "caption": "ok"}).encode() + b"\n"] * 2 +
             [b'{"image": "0.png", "caption": "caf\xe9"}\n'])
    (tmp_path / f"t.{ext}").write_bytes(b"".join(lines))
    with pytest.raises(ValueError, match=rf"t.{ext} line 3: not UTF-8 text"):
        list(sources.from_table(str(tmp_path / f"t.{ext}")))


def test_lone_surrogate_caption_names_file_and_row_and_leaves_no_tmp_shard(tmp_path):
    names = images(tmp_path, 1)
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"image": names[0], "caption": "fine"}) + "\n"
                     + '{"image": "0.png", "caption": "bad \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.jsonl row 2: caption 0 is not valid Unicode"):
        write(sources.from_table(str(table)), tmp_path)  # after row 1 opened a shard
    assert not os.listdir(tmp_path / "out")


def test_no_tmp_shard_survives_any_failure(tmp_path):
    def records():
        yield from make_records(3)
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a shard

    with pytest.raises(KeyboardInterrupt):
        write(records(), tmp_path)
    assert not os.listdir(tmp_path / "out")


def test_writer_cuts_long_captions_and_skips_oversized_images(tmp_path):
    rows = make_records(3, fmt="png")
    rows[0].captions[0] = "é" * 1_000_000  # 2 MB of UTF-8: cut at a character boundary
    rows[1] = schema.Record(png_claiming(12000, 12000), ["a huge canvas"], "huge")
    summary = write(rows, tmp_path)
    assert (summary.written, summary.too_large_images, summary.cut_captions) == (2, 1, 1)
    kept = validate.read_records(summary.shards[0])
    assert [r.example_id for r in kept] == ["ex/0000", "ex/0002"]
    assert kept[0].captions[0] == "é" * 512  # 1024 bytes


def test_validate_reports_oversized_images_without_decoding_and_long_captions(tmp_path):
    rows = make_records(2, fmt="png")
    rows.append(schema.Record(png_claiming(12000, 12000), ["huge"], "huge"))
    rows[0].captions[0] = "long " * 1000
    path = write_shard(str(tmp_path / "s.tfrecord"), rows)
    report = validate.validate_shards([path])
    assert report.counts() == {"too_large": 1} and report.long_captions == 1
    assert "12000x12000 pixels" in str(report) and "(cut in training): 1" in str(report)
    small = limits.InputLimits(max_image_pixels=400, max_caption_bytes=10_000)
    assert validate.validate_shards([path], bounds=small).counts() == {"too_large": 3}


@pytest.mark.parametrize("outside", ["../elsewhere/0.png", "sub/../../elsewhere/0.png",
                                     "ABSOLUTE"])
def test_table_paths_outside_its_folder_are_refused_naming_the_row(tmp_path, outside):
    """Injected fault (issue 24 item 5): a table naming an image outside its folder, `..` or an
    absolute path. The old code packed any readable image the table named."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "0.png").write_bytes(png_bytes(random_image(0)))
    (tmp_path / "table" / "sub").mkdir(parents=True)
    (tmp_path / "table" / "1.png").write_bytes(png_bytes(random_image(1)))
    if outside == "ABSOLUTE":
        outside = str(tmp_path / "elsewhere" / "0.png")
    table = write_jsonl(tmp_path / "table" / "t.jsonl",
                        [{"image": "1.png", "caption": "inside"},
                         {"image": "sub/../1.png", "caption": "still inside"},
                         {"image": outside, "caption": "outside"}])
    with pytest.raises(ValueError, match=rf"t.jsonl row 3: column 'image' {outside!r} is outside "
                                         rf"the table's folder {tmp_path / 'table'}: .* "
                                         r"--allow_outside_paths"):
        write(sources.from_table(table), tmp_path)
    assert os.listdir(tmp_path / "out") == []    # no shard, no .tmp
    summary = write(sources.from_table(table, allow_outside_paths=True), tmp_path)
    assert summary.written == 3
    # --image_root moves the folder the paths must stay in.
    rooted = write_jsonl(tmp_path / "r.jsonl", [{"image": "../1.png", "caption": "up"}])
    with pytest.raises(ValueError, match=r"r.jsonl row 1: column 'image' '../1.png' is outside "
                                         "image_root"):
        list(sources.from_table(rooted, image_root=str(tmp_path / "table" / "sub")))


def test_class_folder_with_a_newline_is_refused_naming_it(tmp_path):
    """Injected fault (issue 24 item 6): a class folder whose name holds a newline; the old
    writer stored it, and class_names.txt then had 5 lines for 4 classes."""
    for name in ("plain", "line\nbreak"):
        (tmp_path / "root" / name).mkdir(parents=True)
        (tmp_path / "root" / name / "0.png").write_bytes(png_bytes(random_image(len(name))))
    with pytest.raises(ValueError, match=r"\(label 0\): class name 'line\\nbreak' holds a control "
                                         "character"):
        write(sources.from_folder(str(tmp_path / "root"), ["a {c}"]), tmp_path)
    assert not [p for p in os.listdir(tmp_path / "out") if not p.startswith(".")]


def test_two_labels_of_one_name_are_refused_naming_both(tmp_path):
    """Injected fault (issue 24 item 6): a class-name list with a repeated name; the old writer
    wrote it (refused only at export)."""
    names = images(tmp_path, 3)
    table = write_jsonl(tmp_path / "t.jsonl", [{"image": n, "caption": f"c{i}", "label": i}
                                               for i, n in enumerate(names)])
    with pytest.raises(ValueError, match=r"example '2.png' \(label 2\): class name 'red' is also "
                                         r"label 0's; each class needs a distinct name"):
        write(sources.from_table(table, label_column="label",
                                 class_names=["red", "green", "red"]), tmp_path)
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith((".tmp", ".tfrecord"))]

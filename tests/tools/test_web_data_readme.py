"""The README's "Web-scale data" commands, run as written (`basic-X` as `python3 tools/X.py`) on
generated webdataset tars (mixed JPEG/PNG/WebP) and img2dataset-layout TFRecords (metadata
columns of flipping type), with the issue's faults in them: a tar cut mid-member, members
without their pair, a json that is not JSON, an empty .txt, corrupt and truncated WebP, a WebP
header claiming 12000x12000, a record without image, a shard cut mid-record. Each is skipped and
counted; both formats train, evaluate and export. The one addition: --train_steps and
--max_batch for new-experiment, so that training takes seconds."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
FAST = {"basic-new-experiment": ["--train_steps=12", "--max_batch=8"]}
PER_TAR = 24


def readme_commands():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("\n## Web-scale data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def write_faulty_tars(folder):
    """00000.tar: 24 pairs + 7 bad samples; 00001.tar: 24 pairs cut inside sample 44's image
    (4 of sizes.json's 24 lost); 00002.tar: 24 whole pairs (the evaluation set)."""
    from data_helpers import webp_claiming
    from web_helpers import FORMATS, image_bytes, pair_members, write_tar, write_tars

    write_tars(folder, 3, PER_TAR)
    members = [m for i in range(PER_TAR) for m in pair_members(i, FORMATS[i % 4])]
    members += (pair_members(900)[:1]                                  # image, no .txt
                + pair_members(901)[1:2]                               # .txt, no image
                + pair_members(902, meta=b"{not json")                 # bad json
                + pair_members(903, text="")                           # empty .txt
                + [("000000904.webp", b"RIFF\x20\x00\x00\x00WEBPVP8 garbage")]
                + pair_members(904)[1:]                                # corrupt WebP
                + [("000000905.webp", image_bytes(905, "webp")[:40])]
                + pair_members(905)[1:]                                # truncated WebP
                + [("000000906.webp", webp_claiming(12000, 12000))]
                + pair_members(906)[1:])                               # 12000 x 12000 header
    write_tar(os.path.join(folder, "00000.tar"), members)
    cut = os.path.join(folder, "00001.tar")
    data = open(cut, "rb").read()
    start = data.index(f"{PER_TAR + 20:09d}.".encode())
    open(cut, "wb").write(data[:start + 512 + 50])


def write_faulty_img2dataset(folder, eval_folder):
    """i2d/: 2 shards of 24 records with flipping metadata types; shard 0 also holds a failed
    download (no image), corrupt and truncated WebP, a 12000 x 12000 WebP header and an empty
    txt; shard 1 is cut inside its last record (its _stats.json says 24). i2d_eval/: 12."""
    from data_helpers import webp_claiming
    from web_helpers import (FORMATS, image_bytes, img2dataset_example,
                             write_img2dataset_shard)

    os.makedirs(folder)
    os.makedirs(eval_folder)
    rows = [img2dataset_example(j, FORMATS[j % 4]) for j in range(PER_TAR)]
    rows += [img2dataset_example(900, "jpg", fields={"jpg": None}),
             img2dataset_example(901, "webp", fields={"webp": b"RIFF\x20\x00\x00\x00WEBPVP8 x"}),
             img2dataset_example(902, "webp", fields={"webp": image_bytes(902, "webp")[:40]}),
             img2dataset_example(903, "webp", fields={"webp": webp_claiming(12000, 12000)}),
             img2dataset_example(904, "jpg", text="")]
    write_img2dataset_shard(os.path.join(folder, "00000.tfrecord"), rows, successes=PER_TAR)
    rows = [img2dataset_example(PER_TAR + j, FORMATS[j % 4]) for j in range(PER_TAR)]
    path = write_img2dataset_shard(os.path.join(folder, "00001.tfrecord"), rows)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) - len(rows[-1]) // 2])
    write_img2dataset_shard(os.path.join(eval_folder, "00000.tfrecord"), [
        img2dataset_example(100 + j, FORMATS[j % 4]) for j in range(12)])


def last_progress_line(stderr):
    lines = [line for line in stderr.splitlines() if "| skipped " in line]
    assert lines, stderr[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_readme_web_data_commands_end_to_end_with_faults(tmp_path):
    write_faulty_tars(str(tmp_path / "shards"))
    write_faulty_img2dataset(str(tmp_path / "i2d"), str(tmp_path / "i2d_eval"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "basic-make-tfrecords", "basic-new-experiment", "basic-train", "basic-evaluate",
        "basic-export", "basic-new-experiment", "basic-train", "basic-evaluate", "basic-export"]
    out = {}
    for n, command in enumerate(commands):
        tool = os.path.join(REPO, "tools", command[0][len("basic-"):].replace("-", "_") + ".py")
        proc = subprocess.run([sys.executable, tool, *command[1:], *FAST.get(command[0], [])],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=900)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-4000:])
        out[n] = proc

    # the parallel conversion: 24 + 20 pairs written, every fault counted by cause
    summary = json.load(open(tmp_path / "web" / "train.summary.json"))
    assert summary["written"] == 2 * PER_TAR - 4
    assert summary["skipped_sources"] == {"unpaired": 2, "bad_json": 1, "truncated_tar": 4}
    assert (summary["empty_records"], summary["bad_images"], summary["too_large_images"]) == (
        1, 2, 1)
    assert "skipped samples: unpaired 2, bad_json 1, bad_text 0, truncated_tar 4" in (
        out[0].stdout)
    # new-experiment converted the same tars (written into web_exp/data) and the eval tar
    web_summary = json.load(open(tmp_path / "web_exp" / "data" / "train.summary.json"))
    assert web_summary["written"] == summary["written"]
    # img2dataset training counted its bad records by cause on the progress line
    line = last_progress_line(out[6].stderr)
    for cause in ("bad_image", "too_large", "truncated"):
        assert re.search(rf"\b{cause} [1-9]", line), line
    gin_text = (tmp_path / "i2d_exp" / "experiment.gin").read_text()
    assert "make_dataset.record_format = 'img2dataset'" in gin_text
    for exp in ("web_exp", "i2d_exp"):
        assert json.load(open(tmp_path / exp / "eval.json"))
        assert os.path.exists(tmp_path / exp / "serving" / "models.config")

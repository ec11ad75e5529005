"""open_clip's training loader on webdataset tars, timed in the torch venv (setup_openclip_data.sh).

  <venv python> -m benchmarks.openclip_loader --child '<json config>'

`open_clip_train.data.get_wds_dataset` exactly as open_clip's trainer calls it for
`--train-data '<tars>' --dataset-type webdataset --dataset-resampled --workers W --batch-size B`:
shard resampling, per-worker sample shuffle (its 5,000 / 1,000 buffer), PIL decode ("pilrgb"),
open_clip's training transform (`image_transform(size, is_train=True)`: RandomResizedCrop at
scale 0.9-1.0, bicubic, to tensor, normalise), its tokenizer (`get_tokenizer('ViT-B-32',
context_length=L)`), batching in the workers, a `WebLoader` (torch DataLoader) with W worker
processes. Resampling (with replacement) keeps a few tars streaming for as long as we time.
Imports no TensorFlow and nothing of basic_tf.
"""
import os
import time
from types import SimpleNamespace

from benchmarks import common


def measure(cfg: dict) -> dict:
    import open_clip
    import torch
    from open_clip_train.data import get_wds_dataset

    workers = cfg.get("workers") or os.cpu_count()
    args = SimpleNamespace(train_data=cfg["tars"], val_data=None, dataset_resampled=True,
                           train_num_samples=10 ** 7, train_data_upsampling_factors=None,
                           seed=0, batch_size=cfg["batch"], workers=workers, world_size=1)
    preprocess = open_clip.image_transform(cfg["image_size"], is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=cfg["seq_len"])
    loader = get_wds_dataset(args, preprocess, is_train=True, tokenizer=tokenizer).dataloader
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(cfg["warmup_batches"]):
        images, texts = next(it)
    first = time.perf_counter() - start
    start = time.perf_counter()
    done = 0
    while done < cfg["batches"] or time.perf_counter() - start < cfg.get("min_seconds", 0):
        images, texts = next(it)
        done += 1
    seconds = time.perf_counter() - start
    assert tuple(images.shape) == (cfg["batch"], 3, cfg["image_size"], cfg["image_size"])
    assert tuple(texts.shape) == (cfg["batch"], cfg["seq_len"])
    pairs = cfg["batch"] * done / seconds
    return {"impl": "open_clip_train.data.get_wds_dataset", "torch": torch.__version__,
            "open_clip": open_clip.__version__, "workers": workers,
            "warmup_s": round(first, 2), "seconds": round(seconds, 2), "batches": done,
            "pairs_per_s": round(pairs, 1)}


if __name__ == "__main__":
    common.child_main(measure)

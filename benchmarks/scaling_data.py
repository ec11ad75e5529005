"""The two datasets of the batch-size scaling study (benchmarks/scaling_study.py), as arrays.

- 'fashion_mnist' (the first study, a documented negative result): single garments, captions =
  the training templates filled with the class name (10 caption contents).
- 'grid': 2x2 grids of four real garments captioned in position (basic_tf/data/grid_captions:
  10^4 contents), written through the TFRecord writer and read back; training grids from
  training images only, held-out grids from test images only.

Images stay uint8 [N, h, w] (gray; the study's graphs make them float RGB at the model's size).
Captions are token ids `caption_tokens` int32 [K, P, L]: K caption sets of P phrasings; example
i of a split has the set `<split>_caption_of[i]` and training draws one phrasing per step.
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass
class StudyData:
    train_images: np.ndarray          # uint8 [N, h, w]
    train_caption_of: np.ndarray      # int64 [N] -> row of caption_tokens
    heldout_images: np.ndarray        # uint8 [M, h, w]
    heldout_caption_of: np.ndarray    # int64 [M]
    caption_tokens: np.ndarray        # int32 [K, P, L]
    zero_shot: dict                   # split -> (uint8 [n, h, w], int32 labels [n])
    class_names: list
    zero_shot_templates: list         # '{c}' = class name; no training caption is one
    train_phrasings: list
    retrieval: Optional[dict]         # images uint8 [R, h, w], tokens int32 [R, L], groups [R]
    tokenizer: object
    facts: dict                       # counts for the results JSON


def _tokenizer(workdir: str, captions: Sequence[str], seq_len: int, vocab_size: int = 200):
    """SentencePiece trained on training captions only (words of the zero-shot prompts that never
    occur in them are split into pieces)."""
    from basic_tf.data import tokenizer

    path = tokenizer.train_sentencepiece(list(captions), os.path.join(workdir, "spm"),
                                         vocab_size)
    return tokenizer.Tokenizer(path, seq_len)


def _tokens(tok, texts: Sequence[str], what: str) -> np.ndarray:
    """int32 [n, L]; refuses captions the token length would cut."""
    import tensorflow as tf

    ids = tok(tf.constant(list(texts))).numpy()
    longest = int((ids != 0).sum(axis=1).max())
    if longest >= tok.seq_len:
        raise ValueError(f"{what}: a text needs >= {longest} tokens but SEQ_LEN (text_tower_config"
                         f".max_len) = {tok.seq_len}; raise it with --gin_bindings='SEQ_LEN = "
                         f"{longest + 8}'")
    return ids


def fashion_mnist_data(workdir: str, seq_len: int, train_limit: int = 60_000,
                       eval_examples: int = 10_000) -> StudyData:
    """Single garments; the caption set of an image is its class (10 sets of T templates)."""
    from basic_tf.data import fashion_mnist, sources
    from basic_tf.zeroshot import load_class_names, load_templates

    class_names = load_class_names("fashion_mnist")
    templates = list(sources.caption_templates())
    captions = [t.format(c) for c in class_names for t in templates]
    tok = _tokenizer(workdir, captions * 20, seq_len)
    caption_tokens = _tokens(tok, captions, "training captions").reshape(
        len(class_names), len(templates), -1)
    (tr_x, tr_y), (te_x, te_y) = (fashion_mnist.load(s) for s in ("train", "test"))
    tr_x, tr_y = tr_x[:train_limit], tr_y[:train_limit].astype(np.int64)
    te_y = te_y.astype(np.int64)
    return StudyData(
        train_images=tr_x, train_caption_of=tr_y, heldout_images=te_x, heldout_caption_of=te_y,
        caption_tokens=caption_tokens,
        zero_shot={"train": (tr_x[:eval_examples], tr_y[:eval_examples].astype(np.int32)),
                   "test": (te_x[:eval_examples], te_y[:eval_examples].astype(np.int32))},
        class_names=class_names, zero_shot_templates=load_templates("fashion_mnist"),
        train_phrasings=templates, retrieval=None, tokenizer=tok,
        facts={"caption_contents": len(class_names), "train_examples": len(tr_x)})


def grid_data(workdir: str, seq_len: int, train_grids: int = 30_000, heldout_grids: int = 2_500,
              retrieval_pairs: int = 1_000, eval_examples: int = 10_000,
              seed: int = 0) -> StudyData:
    """Grids written to `workdir` through the TFRecord writer and read back. Zero-shot: single
    Fashion-MNIST garments tiled into all four cells (same pixel scale as in training), prompts
    = the held-out phrasings with the class name in every cell. Retrieval: the first
    `retrieval_pairs` held-out grids with their first phrasing; ground truth by caption
    identity (grids of equal content have the same caption)."""
    from basic_tf.data import fashion_mnist, grid_captions
    from basic_tf.zeroshot import load_class_names

    class_names = load_class_names("fashion_mnist")
    train = grid_captions.make_grid_split(os.path.join(workdir, "grid_train"), "train",
                                          train_grids, seed, class_names)
    heldout = grid_captions.make_grid_split(os.path.join(workdir, "grid_test"), "test",
                                            heldout_grids, seed + 1, class_names)
    tok = _tokenizer(workdir, train["captions"].reshape(-1), seq_len)
    captions = np.concatenate([train["captions"], heldout["captions"]])
    caption_tokens = _tokens(tok, captions.reshape(-1), "grid captions").reshape(
        len(captions), captions.shape[1], -1)
    templates = grid_captions.uniform_templates()
    _tokens(tok, [t.replace("{c}", c) for t in templates for c in class_names],
            "zero-shot prompts")
    n_train, n_heldout = len(train["images"]), len(heldout["images"])
    zero_shot = {}
    for split in ("train", "test"):
        x, y = fashion_mnist.load(split)
        zero_shot[split] = (grid_captions.tile(x[:eval_examples]),
                            y[:eval_examples].astype(np.int32))
    r = min(retrieval_pairs, n_heldout)
    retrieval = {"images": heldout["images"][:r],
                 "tokens": caption_tokens[n_train:n_train + r, 0],
                 "groups": heldout["content"][:r]}
    return StudyData(
        train_images=train["images"], train_caption_of=np.arange(n_train),
        heldout_images=heldout["images"], heldout_caption_of=n_train + np.arange(n_heldout),
        caption_tokens=caption_tokens, zero_shot=zero_shot, class_names=class_names,
        zero_shot_templates=templates, train_phrasings=list(grid_captions.PHRASINGS),
        retrieval=retrieval, tokenizer=tok,
        facts={"caption_contents": 10 ** 4, "train_examples": n_train,
               "heldout_examples": n_heldout,
               "distinct_train_contents": int(np.unique(train["content"]).size),
               "retrieval_pairs": r,
               "retrieval_distinct_captions": int(np.unique(retrieval["groups"]).size),
               "held_out_phrasings": list(grid_captions.HELD_OUT_PHRASINGS)})


DATASETS = {"fashion_mnist": fashion_mnist_data, "grid": grid_data}

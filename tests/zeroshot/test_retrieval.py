"""Recall@K both ways against a NumPy ranking reference; embedding under 4 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.zeroshot import recall_at_k
from basic_tf.data.pipeline import pad_to_batches
from basic_tf.zeroshot.retrieval import embed_retrieval_dataset

from zeroshot_helpers import SEQ_LEN, StandInImageEncoder, hash_tokenizer


def numpy_recalls(image_emb, text_emb, owners, ks):
    """Full argsort ranking (no ties with random embeddings)."""
    sims = image_emb @ text_emb.T  # [N, M]
    i2t = []
    for i in range(len(image_emb)):
        positives = np.flatnonzero(owners == i)
        if positives.size:  # images without captions are left out
            order = np.argsort(-sims[i])
            i2t.append(np.flatnonzero(np.isin(order, positives))[0])
    t2i = [np.flatnonzero(np.argsort(-sims[:, j]) == owners[j])[0] for j in range(len(owners))]
    i2t, t2i = np.array(i2t), np.array(t2i)
    return {"image_to_text": {k: np.mean(i2t < k) for k in ks},
            "text_to_image": {k: np.mean(t2i < k) for k in ks}}


@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_recall_matches_numpy(chunk_size):
    rng = np.random.default_rng(0)
    image_emb = rng.normal(size=[40, 8]).astype(np.float32)
    owners = np.concatenate([np.repeat(np.arange(30), rng.integers(1, 4, size=30)),
                             rng.integers(0, 40, size=10)])  # images 30..39: 0 or few captions
    text_emb = (image_emb[owners] + 1.5 * rng.normal(size=[len(owners), 8])).astype(np.float32)
    ks = (1, 5, 10)
    got = recall_at_k(image_emb, text_emb, owners, ks, chunk_size=chunk_size)
    want = numpy_recalls(image_emb, text_emb, owners, ks)
    for direction in want:
        for k in ks:
            assert got[direction][k] == pytest.approx(want[direction][k]), (direction, k)
    assert 0.0 < got["image_to_text"][1] < got["image_to_text"][10] < 1.0  # a non-trivial case


def test_recall_hand_example():
    """Two images, three captions; caption 2 (of image 1) is closer to image 0."""
    image_emb = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    text_emb = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], np.float32)
    owners = np.array([0, 1, 1])
    got = recall_at_k(image_emb, text_emb, owners, ks=(1, 2))
    # i2t: image 0 -> caption 0 first (hit); image 1 -> caption 1 first (hit).
    assert got["image_to_text"] == {1: 1.0, 2: 1.0}
    # t2i: captions 0, 1 hit at rank 0; caption 2 ranks image 0 first, its own image second.
    assert got["text_to_image"] == {1: pytest.approx(2 / 3), 2: 1.0}


def test_bad_owner_index():
    with pytest.raises(ValueError, match=r"text_to_image must be \[2\] ints in \[0, 1\)"):
        recall_at_k(np.ones([1, 2]), np.ones([2, 2]), np.array([0, 1]))


def test_embed_under_mirrored_keeps_pairs(mirrored4, text_encoder):
    """9 images with 0-3 captions each, per-replica batch 2 over 4 replicas (16 slots, 7 of them
    padding): the gathered embeddings and caption owners equal an eager, unbatched pass."""
    rng = np.random.default_rng(3)
    n, k = 9, 3
    images = rng.uniform(size=[n, 8, 8, 3]).astype(np.float32)
    counts = np.array([1, 3, 0, 2, 1, 3, 2, 1, 1])
    words = ["cat", "dog", "red", "car", "boat", "sky", "blue", "green"]
    captions = [[" ".join(rng.choice(words, 3)) for _ in range(c)] for c in counts]
    token_ids = np.zeros([n, k, SEQ_LEN], np.int32)
    caption_mask = np.zeros([n, k], np.float32)
    for i, caps in enumerate(captions):
        if caps:
            token_ids[i, :len(caps)] = hash_tokenizer(tf.constant(caps)).numpy()
            caption_mask[i, :len(caps)] = 1.0
    with mirrored4.scope():
        image_encoder = StandInImageEncoder()
        image_encoder(images[:1])

    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices(
            {"images": images, "token_ids": token_ids, "caption_mask": caption_mask})
        return pad_to_batches(ds, ctx.get_per_replica_batch_size(8), ctx.num_replicas_in_sync)

    dist = mirrored4.distribute_datasets_from_function(dataset_fn)
    image_emb, text_emb, owners, skipped, groups = embed_retrieval_dataset(
        image_encoder, text_encoder, dist, mirrored4)
    assert skipped == 0
    np.testing.assert_array_equal(groups, np.arange(counts.sum()))  # no caption_hash: distinct
    flat = [c for caps in captions for c in caps]
    np.testing.assert_allclose(image_emb, image_encoder(images).numpy(), atol=1e-6)
    np.testing.assert_allclose(text_emb, text_encoder(hash_tokenizer(tf.constant(flat))).numpy(),
                               atol=1e-6)
    np.testing.assert_array_equal(owners, np.repeat(np.arange(n), counts))


def grouped_recalls(image_emb, text_emb, owners, groups, ks):
    """Brute force over distinct texts: positives by caption text; rank = negatives scoring
    above the best positive."""
    texts = sorted(set(groups))
    emb = np.stack([text_emb[list(groups).index(g)] for g in texts])
    sims = image_emb @ emb.T                                          # [N, distinct texts]
    positive = np.array([[np.any((owners == i) & (groups == g)) for g in texts]
                         for i in range(len(image_emb))])
    i2t = [np.sum(sims[i][~positive[i]] > sims[i][positive[i]].max())
           for i in range(len(sims)) if positive[i].any()]
    t2i = [np.sum(sims[:, t][~positive[:, t]] > sims[:, t][positive[:, t]].max())
           for t in range(len(texts))]
    return {"image_to_text": {k: np.mean(np.array(i2t) < k) for k in ks},
            "text_to_image": {k: np.mean(np.array(t2i) < k) for k in ks}}


@pytest.mark.parametrize("chunk_size", [5, 1024])
def test_recall_by_caption_identity_matches_brute_force(chunk_size):
    rng = np.random.default_rng(4)
    image_emb = rng.normal(size=[30, 8]).astype(np.float32)
    owners = np.concatenate([np.arange(30), rng.integers(0, 30, size=20)])
    groups = rng.integers(0, 12, size=len(owners))        # 12 caption texts, repeated
    text_emb = rng.normal(size=[12, 8]).astype(np.float32)[groups]  # same text, same embedding
    ks = (1, 3, 10)
    got = recall_at_k(image_emb, text_emb, owners, ks, chunk_size, caption_groups=groups * 7)
    want = grouped_recalls(image_emb, text_emb, owners, groups, ks)
    for direction in want:
        for k in ks:
            assert got[direction][k] == pytest.approx(want[direction][k]), (direction, k)


def test_repeated_captions_are_one_caption():
    """Template captions: 3 classes x 10 images, each image captioned 'a photo of a <class>.'.
    A perfect model (image = its class vector + noise, text = the class vector) finds a right
    image and caption at rank 1 both ways; with own-image ground truth t2i R@1 was 1 in 10."""
    from basic_tf.zeroshot import evaluate_retrieval, report

    rng = np.random.default_rng(5)
    classes = np.repeat(np.arange(3), 10)
    centers = np.eye(3, dtype=np.float32)
    images = centers[classes] + 0.01 * rng.normal(size=[30, 3]).astype(np.float32)
    hashes = np.array([hash(f"a photo of a {c}.") % 2 ** 62 for c in classes], np.int64)
    batches = tf.data.Dataset.from_tensor_slices({
        "images": images, "token_ids": classes.reshape(30, 1, 1).astype(np.int32),
        "caption_mask": np.ones([30, 1], np.float32), "caption_hash": hashes.reshape(30, 1),
        "mask": np.ones([30], np.float32)}).batch(8)
    result = evaluate_retrieval(lambda x: tf.math.l2_normalize(x, axis=-1),
                                lambda ids: tf.gather(centers, ids[:, 0]), batches)
    assert (result["num_captions"], result["num_distinct_captions"]) == (30, 3)
    assert result["image_to_text"][1] == 1.0 and result["text_to_image"][1] == 1.0
    assert "3 distinct captions of 30" in report.format_table({"r": result})

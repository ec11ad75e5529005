"""CoAtNet and ViT towers: parameter counts against the papers and against the built models,
and small custom configs down to 1x1 feature maps."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.models import (CoAtNet, CoAtNetConfig, ImageClassifier, ViT, ViTConfig,
                             coatnet_param_count, preset_config, vit_param_count)
from basic_tf.models.coatnet import PAPER_PARAMS, PRESETS


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_counts_within_5_percent_of_paper(preset):
    count = coatnet_param_count(preset, image_size=224, num_classes=1000)
    assert abs(count / PAPER_PARAMS[preset] - 1) < 0.05, (preset, count)


def test_analytic_count_equals_built_model():
    """CoAtNet-0/1/2 at 224 with a 1000-class head, built (no forward pass)."""
    for preset in ("coatnet-0", "coatnet-1", "coatnet-2"):
        model = ImageClassifier(num_classes=1000, pre_logits=True, image_tower="coatnet",
                                image_config=preset_config(preset), image_size=224)
        assert model.count_params() == coatnet_param_count(preset, 224, 1000), preset
        del model


# 32x32 -> stem 16 -> 8 -> 4 -> 2 -> 1: the last attention stage sees a 1x1 map.
DEEP_TINY = CoAtNetConfig(stem_width=8, stages=(("C", 1, 16, 2), ("C", 1, 16, 2),
                                                 ("T", 2, 32, 2), ("T", 1, 64, 2)),
                          head_dim=16, drop_path_rate=0.2, dropout_rate=0.1)


def test_tiny_custom_config_down_to_one_by_one():
    tower = CoAtNet(DEEP_TINY, output_dim=10)
    tower.build((None, 32, 32, 3))
    assert [b.grid for b in tower.blocks[2:]] == [(2, 2), (2, 2), (1, 1)]
    assert tower.count_params() == coatnet_param_count(DEEP_TINY, 32, num_classes=0,
                                                       output_dim=10)
    images = tf.random.stateless_uniform([3, 32, 32, 3], [0, 1])
    out = tower(images, tf.constant([1, 1]), training=True)
    assert out.shape == (3, 10) and np.all(np.isfinite(out.numpy()))
    with pytest.raises(ValueError, match="built for a 2x2 grid"):
        tower(tf.zeros([1, 64, 64, 3]))


def test_bad_stage_config_is_rejected():
    with pytest.raises(ValueError, match=r"stages\[1\]"):
        CoAtNetConfig(stem_width=8, stages=(("C", 1, 16, 2), ("X", 1, 32, 2)))
    with pytest.raises(ValueError, match="head_dim=32"):
        CoAtNetConfig(stem_width=8, stages=(("T", 1, 48, 2),))
    with pytest.raises(ValueError, match="coatnet-9"):
        preset_config("coatnet-9")


def test_vit_counts():
    # ViT-B/16 with a 1000-class head and no pre-logits: 86,567,656 (Dosovitskiy et al.; timm).
    assert vit_param_count(ViTConfig(pooling="cls"), 224, num_classes=1000,
                           pre_logits=False) == 86_567_656
    config = ViTConfig(patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64, pooling="cls")
    tower = ViT(config, output_dim=16)
    tower.build((None, 32, 32, 3))
    assert tower.count_params() == vit_param_count(config, 32, num_classes=0, output_dim=16)
    assert tower(tf.zeros([2, 32, 32, 3])).shape == (2, 16)


def test_block_specs_walk_what_the_tower_builds():
    """The one stage walk (param_count and the planner read it too): hand-computed 'SAME'
    sides for odd, non-square images and a stride-1 stage, and the tower built from it."""
    from basic_tf.models.coatnet import block_specs
    config = CoAtNetConfig(stem_width=8, stages=(("C", 1, 8, 2), ("T", 2, 16, 1),
                                                 ("C", 1, 24, 2)), head_dim=8)
    specs = block_specs(config, (33, 20))     # stem: (17, 10)
    assert [(s.index, s.name, s.kind, s.in_width, s.width, s.stride, s.in_size, s.size)
            for s in specs] == [
        (0, "stage1_block0", "C", 8, 8, 2, (17, 10), (9, 5)),
        (1, "stage2_block0", "T", 8, 16, 1, (9, 5), (9, 5)),
        (2, "stage2_block1", "T", 16, 16, 1, (9, 5), (9, 5)),
        (3, "stage3_block0", "C", 16, 24, 2, (9, 5), (5, 3))]
    assert block_specs(config)[3].size is None
    tower = CoAtNet(config)
    tower.build((None, 33, 20, 3))
    assert [(b.name, b.width, b.stride) for b in tower.blocks] == [
        (s.name, s.width, s.stride) for s in specs]
    assert [b.grid for b in tower.blocks[1:3]] == [(9, 5), (9, 5)]
    assert tower(tf.zeros([1, 33, 20, 3])).shape == (1, 24)

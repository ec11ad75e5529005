"""The scaling study's protocol arithmetic, learning-rate rule, summary and table
(benchmarks/scaling_study.py, scaling_plot.py), without training anything."""
import math

import pytest

from benchmarks import scaling_plot, scaling_study


def test_protocols_fix_steps_or_examples():
    steps = scaling_study.StudySettings(protocol="steps", train_steps=140)
    examples = scaling_study.StudySettings(protocol="examples", examples_seen=45_000)
    assert [steps.steps_for(b) for b in (16, 1024)] == [140, 140]
    assert [examples.steps_for(b) for b in (16, 1024)] == [2812, 43]


def test_one_learning_rate_for_every_batch_unless_sqrt():
    one = scaling_study.StudySettings(base_lr=2e-3)
    sqrt = scaling_study.StudySettings(base_lr=2e-3, lr_scaling="sqrt")
    assert one.peak_lr(16) == one.peak_lr(1024) == 2e-3
    assert sqrt.peak_lr(1024) == pytest.approx(4e-3) and sqrt.peak_lr(64) == pytest.approx(1e-3)


def test_schedule_warms_up_over_a_tenth_then_decays_to_zero():
    lrs = [scaling_study.learning_rate(1.0, i, 100) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


@pytest.mark.parametrize("field,value", [("protocol", "epochs"), ("lr_scaling", "linear"),
                                         ("batch_sizes", (384,))])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        scaling_study.StudySettings(**{field: value}).check()


def _run(batch, seed, acc, gap):
    return {"batch": batch, "seed": seed, "steps": 10, "micro_batches": 1, "seconds": 1.0,
            "zero_shot_test": acc, "loss_gap": gap, "i2t_r1": 0.1, "i2t_r5": 0.3,
            "t2i_r1": 0.2, "t2i_r5": 0.4}


def test_summary_is_mean_and_sample_sd_over_seeds_and_the_table_shows_it():
    runs = [_run(16, 0, 0.5, 0.1), _run(16, 1, 0.7, 0.3), _run(32, 0, 0.9, -0.2)]
    rows = scaling_study.summarise(runs)
    assert [r["batch"] for r in rows] == [16, 32] and rows[0]["seeds"] == 2
    assert rows[0]["zero_shot_test"] == pytest.approx(0.6)
    assert rows[0]["zero_shot_test_std"] == pytest.approx(math.sqrt(0.02))
    assert rows[1]["zero_shot_test_std"] == 0.0 and "accuracy_gap" not in rows[0]
    settings = {"train_steps": 10}
    text = scaling_plot.table({"steps": {"settings": settings, "summary": rows}})
    assert "| steps | 16 | 10 | 1 | 2 | 0.600 ± 0.141 | 0.100 / 0.300 | 0.200 / 0.400 | " \
           "+0.200 ± 0.141 | - | 1 |" in text

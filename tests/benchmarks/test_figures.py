"""Light checks of the benchmark figures (no benchmark runs): every figure in the runner has the
run / table / child entry points, and each table renders measured and skipped rows from the
payload shape its run() writes, with the ratios it reports."""
import importlib

import pytest

from benchmarks import __main__ as runner


@pytest.mark.parametrize("name", runner.FIGURES)
def test_figure_modules_have_the_runner_interface(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.run) and callable(module.table) and callable(module.measure)
    assert module.__doc__.strip().splitlines()[0]  # the README's one-line caption


def test_openclip_table_reports_the_ratio_of_best_runs():
    from benchmarks import openclip_speed
    shapes = {"image_size": 32, "patch_size": 8, "vision_width": 64, "vision_layers": 2,
              "text_width": 64, "text_layers": 2, "context_length": 16}
    payload = {"rows": [
        {"config": "tiny", "batch": 128, "shapes": shapes, "params": 10, "open_clip_params": 11,
         "ours": {"pairs_per_s": 300.0}, "ours_xla": {"pairs_per_s": 150.0},
         "open_clip": {"pairs_per_s": 200.0},
         "ratio": 1.5, "ratio_xla": 0.75},
        {"config": "demo", "skipped": "gin file 'demo' not found"}]}
    payload["rows"].insert(1, dict(payload["rows"][0], config="mid", ours_xla=None))
    del payload["rows"][1]["ratio_xla"]
    text = openclip_speed.table(payload)
    assert "| tiny | 128 | 300.0 | 150.0 | 200.0 | 1.5 / 0.75 |" in text
    assert "| mid | 128 | 300.0 | - | 200.0 | 1.5 / - |" in text  # XLA not timed
    assert "skipped: gin file 'demo' not found" in text


def test_planner_memory_table_flags_rows_outside_tolerance():
    from benchmarks import planner_memory
    parts = {"activations": 1.0, "workspace": 1.0, "gradients": 1.0, "embeddings": 1.0,
             "logits": 1.0, "runtime overhead": 100.0}
    row = dict(config="tiny", batch=128, micro=1, remat="none", measured_mb=200.0,
               predicted_components_mb=parts)
    payload = {"tolerance": 0.25, "rows": [dict(row, predicted_mb=210.0, error=0.05),
                                           dict(row, predicted_mb=100.0, error=-0.5)]}
    lines = planner_memory.table(payload).splitlines()
    assert "| +5% | yes |" in lines[2] and "| -50% | **no** |" in lines[3]

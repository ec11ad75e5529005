"""gin/ holds experiment records: every file parses, states the command that runs it, leaves
nothing the run needs unbound and binds data that fit its model; the model includes of
gin/models/ build alone; tiny, tiny_pretrain and demo train a step as written (their data paths
pointed at the tests' tiny records)."""
import glob
import inspect
import os
import re

import gin
import pytest

from basic_tf import config, from_gin, from_gin_data
from basic_tf.training.train_config import TrainConfig

EXPERIMENTS = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(config.GIN_DIR,
                                                                             "*.gin")))
MODELS = sorted("models/" + os.path.basename(p)[:-4]
                for p in glob.glob(os.path.join(config.GIN_DIR, "models", "*.gin")))
# What a command binds itself at run time: basic-demo writes its data into --out DIR.
BOUND_BY_COMMAND = {"demo": ["make_dataset.file_pattern = 'DIR/data/train-*.tfrecord'",
                             "make_dataset.tokenizer_path = 'DIR/data/spm.model'"]}
# Sections of every experiment, in big_vision's order (after the command at the top).
LAYOUT = ["Data", "Preprocessing", "Model", "Init", "Step", "Optimizer", "Schedule", "Evaluations"]
# The configurables whose required arguments (gin.REQUIRED) a training run must find bound.
RUN_CALLS = {"make_dataset": from_gin_data.make_dataset}


def test_the_layout():
    assert set(EXPERIMENTS) >= {"tiny", "tiny_pretrain", "demo", "basic_s", "basic_m", "basic_l"}
    assert set(MODELS) >= {"models/tiny", "models/demo", "models/basic_s", "models/basic_m",
                           "models/basic_l"}


def _header(name: str) -> str:
    with open(config.resolve_gin_file(name), encoding="utf-8") as f:
        text = f.read()
    return text[:text.index("\n\n")]


@pytest.mark.parametrize("name", EXPERIMENTS + MODELS)
def test_every_gin_file_loads_and_its_model_builds(name):
    config.parse([name], finalize=True)
    model = from_gin.model_configs()     # dual_encoder_config() and the towers' configs
    assert model.dual.image_size >= 8 and model.text.max_len >= 2
    header = _header(name)
    assert header.startswith(f"# {name}.gin: ")
    # Nothing outside the project: no parent-folder reference, no absolute path but the /tmp
    # outputs of its own commands (a URL's path is preceded by its host, so it does not match).
    assert ".." + "/" not in header
    assert not re.findall(r"(?<![\w.:/])/(?!tmp/)[A-Za-z_]+/", header), header


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_states_its_command_and_binds_everything(name):
    header = _header(name)
    command = "basic-demo --out DIR" if name == "demo" else f"--gin_file={name} "
    assert "# Command" in header and command in header, header
    with open(config.resolve_gin_file(name), encoding="utf-8") as f:
        assert re.findall(r"^# ---- (\w+)", f.read(), re.M) == LAYOUT
    config.parse([name], BOUND_BY_COMMAND.get(name, []), finalize=True)
    value = lambda key, default=None: config.bound_value(key, default)  # noqa: E731
    unbound = [f"{fn_name}.{p.name}" for fn_name, fn in RUN_CALLS.items()
               for p in inspect.signature(fn).parameters.values()
               if p.default is gin.REQUIRED and p.kind is p.KEYWORD_ONLY
               and value(f"{fn_name}.{p.name}", KeyError) is KeyError]
    unbound += [f"train.{name}" for name in TrainConfig.REQUIRED
                if value(f"train.{name}", KeyError) is KeyError]
    assert not unbound, f"{name}.gin leaves required {unbound} unbound"
    stage_b = value("train.stage") != "pretrain"
    for key in ("train.stage", "train.train_steps", "train.remat", "train.mesh",
                "train.eval_interval", "make_dataset.global_batch_size", "make_optimizer.kind",
                "make_optimizer.learning_rate") + (
                    ("train.num_micro_batches", "train.loss_kind", "train.local_loss")
                    if stage_b else ()):
        assert value(key, KeyError) is not KeyError, f"{name}.gin does not bind {key}"
    from_gin.make_optimizer()  # the optimizer and its schedule build from the bindings alone
    train = from_gin.train_config()  # every train.* setting checked (TrainConfig)
    model = from_gin.model_configs()
    from_gin_data.data_config().check_model(model.dual.image_size, model.text.max_len)
    if not stage_b:
        assert value("image_classifier_config.num_classes", 0) >= 2
    else:
        assert train.loss_kind in ("softmax", "sigmoid")
        data_replicas = train.mesh_sizes["batch"] if train.mesh else 1
        assert value("make_dataset.global_batch_size") % (
            data_replicas * train.num_micro_batches) == 0
    schedule = config.bound_value("make_optimizer.learning_rate", None)
    if hasattr(schedule, "total_steps"):
        assert schedule.total_steps == train.train_steps


@pytest.mark.parametrize("name", ["tiny", "tiny_pretrain", "demo"])
def test_runnable_experiment_trains_a_step(name, tiny_data, tmp_path):
    """The file as written, only its data paths moved to the tests' records (36x36 colour
    squares; each model's own image size and token length) and one step instead of hundreds."""
    data = [f"make_dataset.file_pattern = '{tiny_data['pattern']}'",
            f"make_dataset.tokenizer_path = '{tiny_data['tokenizer']}'",
            "make_dataset.log_skipped = False", "train.train_steps = 1"]
    if name == "tiny":   # its evaluation runs too (at the end: 1 < train.eval_interval)
        data.append(f"make_dataset.eval_file_pattern = '{tiny_data['pattern']}'")
    config.parse([name], data)
    result = from_gin.train(str(tmp_path / "run"))
    assert result["step"] == 1 and result["checkpoint"].endswith("ckpt-1")
    if name == "tiny":
        assert result["eval"] and all(v == v for v in result["eval"].values())

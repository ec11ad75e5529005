"""The top's gin names for the data, zero-shot and export rooms: bindings -> arguments.

Below the tools, basic_tf.data, basic_tf.zeroshot and basic_tf.export take every setting as an
argument and never read gin (tests/test_gin_boundary.py). This module registers their functions
under the names experiment files and --gin_bindings use, and hands the configured ones down
(basic_tf/from_gin.py does the same for models and training):

  gin name                       library function                        configured here as
  make_dataset.*                 data.pipeline.make_dataset              make_dataset (+ data *)
  input_limits.*                 data.limits.input_limits                input_limits
  caption_templates.*            data.sources.caption_templates          caption_templates
  write_tfrecords.*              data.writer.write_tfrecords             write_tfrecords (+ bounds)
  tfds_classification_dataset.*  zeroshot.inputs.tfds_classification_dataset
  retrieval_dataset.*            zeroshot.inputs.retrieval_dataset       (+ bounds)
  build_zero_shot_classifier.*   zeroshot.classifier.build_zero_shot_classifier  } EVALUATORS
  evaluate_classification.*      zeroshot.evaluation.evaluate_classification     }
  evaluate_retrieval.*           zeroshot.retrieval.evaluate_retrieval           }
  run_and_report.*               zeroshot.run.run_and_report             (+ EVALUATORS)
  serving_limits.*               export.inputs.serving_limits            serving_limits
  export_for_serving.*           export.exporter.export_for_serving      (+ limits, gin record)

* The library's make_dataset takes its image and text view as one argument, `data` (a
basic_tf.data.data_config.DataConfig); gin keeps one flat name per value: `make_dataset` here has
the library's parameters with `data` replaced by DataConfig's fields (make_dataset.image_size,
.seq_len, .tokenizer_path, .eval_crop_fraction, .antialias; DataConfig's defaults), builds
`data` from them and passes input_limits() as `limits`. Its signature is generated from the two
(`_make_dataset_signature`), so gin refuses a binding neither has, naming it.
`make_dataset_for(ctx, data, ...)` is the same with the library's signature, for a caller that
holds a DataConfig. `data_config()` is the view that make_dataset's bindings give, for
evaluation and export.

`tfds_task`, `tfrecord_task`, `retrieval_task` are basic_tf.zeroshot.run's with the configured
dataset builders. Each other configured function takes the same arguments as the library's;
explicit arguments win over bindings.
"""
import dataclasses
import functools
import inspect

import gin

from basic_tf import config
from basic_tf.data import data_config as data_config_lib, limits, pipeline, sources, writer
from basic_tf.export import exporter, inputs as serving_inputs
from basic_tf.zeroshot import classifier, evaluation, inputs, retrieval, run

# ---- data
input_limits = gin.external_configurable(limits.input_limits, "input_limits")
caption_templates = gin.external_configurable(sources.caption_templates, "caption_templates")
_write_tfrecords = gin.external_configurable(writer.write_tfrecords, "write_tfrecords",
                                             denylist=["records", "output_prefix", "total"])


def _make_dataset_signature() -> inspect.Signature:
    """pipeline.make_dataset's signature with `data` replaced by DataConfig's fields
    (keyword-only, DataConfig's defaults). A keyword-only parameter without a default becomes
    gin.REQUIRED, so gin names each one left unbound ("Required bindings for `make_dataset` not
    provided in config: [...]")."""
    library = inspect.signature(pipeline.make_dataset)
    types = {f.name: f.type for f in dataclasses.fields(data_config_lib.DataConfig)}
    parameters = [p.replace(default=gin.REQUIRED)
                  if p.kind is p.KEYWORD_ONLY and p.default is p.empty else p
                  for p in library.parameters.values() if p.name != "data"]
    parameters += [inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=types[name],
        default=gin.REQUIRED if default is dataclasses.MISSING else default)
        for name, default in data_config_lib.field_defaults().items()]
    return library.replace(parameters=parameters)


_MAKE_DATASET_SIGNATURE = _make_dataset_signature()


def _make_dataset(*args, **kwargs):
    """pipeline.make_dataset with the make_dataset.* bindings: DataConfig's fields (image_size,
    seq_len, tokenizer_path, eval_crop_fraction, antialias) build `data` (checked by the
    pipeline), the rest pass as they are, input_limits() is `limits` unless given. Signature:
    pipeline.make_dataset's without `data`, plus those fields (_make_dataset_signature)."""
    arguments = _MAKE_DATASET_SIGNATURE.bind(*args, **kwargs)
    given = {name: arguments.arguments.pop(name) for name in data_config_lib.FIELDS
             if name in arguments.arguments}
    arguments.apply_defaults()
    values = {name: value for name, value in arguments.arguments.items()
              if name not in data_config_lib.FIELDS}
    data = data_config(given_as="given", **given)
    if values["limits"] is None:
        values["limits"] = input_limits()
    return pipeline.make_dataset(values.pop("input_context"), data, **values)


_make_dataset.__signature__ = _MAKE_DATASET_SIGNATURE  # what gin checks bindings against
make_dataset = gin.external_configurable(_make_dataset, "make_dataset",
                                         denylist=["input_context", "training", "limits"])


def make_dataset_for(input_context, data: data_config_lib.DataConfig, **kwargs):
    """make_dataset (configured) with pipeline.make_dataset's signature: `data`'s fields are
    explicit arguments and win over the make_dataset.* bindings, as the other kwargs do. For
    callers that hold a DataConfig (zeroshot.run.tfrecord_task, the input benchmark)."""
    return make_dataset(input_context, **{name: getattr(data, name)
                                          for name in data_config_lib.FIELDS}, **kwargs)


def write_tfrecords(records, output_prefix, **kwargs):
    """writer.write_tfrecords with the write_tfrecords.* bindings and input_limits() as
    `bounds` unless given."""
    if kwargs.get("bounds") is None:
        kwargs["bounds"] = input_limits()
    return _write_tfrecords(records, output_prefix, **kwargs)


def data_config(*, given_as: str = "flag", **overrides) -> data_config_lib.DataConfig:
    """The data config of the parsed gin files: each field's make_dataset.<field> binding
    (macros resolved, as gin injects it), else make_dataset's default; `overrides`
    (field=value, None = not given) are explicit values and win, their source labelled
    `given_as` ('flag' for a tool's flags; make_dataset passes what gin or its caller gave).
    Raises ValueError naming a field whose value is out of range. Defaults: DataConfig's
    (data_config.field_defaults). The one builder of a DataConfig from bindings."""
    fields = data_config_lib.FIELDS
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"data_config: unknown fields {unknown}; fields are {fields}")
    defaults = data_config_lib.field_defaults()
    values, where = {}, []
    missing = object()
    for field in fields:
        if overrides.get(field) is not None:
            values[field], source = overrides[field], given_as
        else:
            default = defaults[field]
            value = config.bound_value(f"make_dataset.{field}", missing)
            values[field], source = (
                (None if default is dataclasses.MISSING else default,
                 "make_dataset default") if value is missing else (value, "gin"))
        where.append((field, source))
    return data_config_lib.DataConfig(**values, sources=tuple(where)).check_values()


# ---- zero-shot evaluation
tfds_classification_dataset = gin.external_configurable(
    inputs.tfds_classification_dataset, "tfds_classification_dataset",
    denylist=["input_context"])
_retrieval_dataset = gin.external_configurable(
    inputs.retrieval_dataset, "retrieval_dataset", denylist=["tokenizer", "input_context",
                                                             "bounds"])


def retrieval_dataset(tokenizer, file_pattern=gin.REQUIRED, **kwargs):
    """inputs.retrieval_dataset with the retrieval_dataset.* bindings and input_limits()."""
    kwargs.setdefault("bounds", input_limits())
    return _retrieval_dataset(tokenizer, file_pattern, **kwargs)


EVALUATORS = run.Evaluators(
    build_classifier=gin.external_configurable(
        classifier.build_zero_shot_classifier, "build_zero_shot_classifier",
        denylist=["encode_text_fn", "tokenizer", "class_names", "templates"]),
    classify=gin.external_configurable(
        evaluation.evaluate_classification, "evaluate_classification",
        denylist=["encode_image_fn", "classifier", "dataset", "strategy", "class_names",
                  "predictions", "logit_scale"]),
    retrieve=gin.external_configurable(
        retrieval.evaluate_retrieval, "evaluate_retrieval",
        denylist=["encode_image_fn", "encode_text_fn", "dataset", "strategy"]))
run_and_report = functools.partial(gin.external_configurable(
    run.run_and_report, "run_and_report",
    denylist=["model", "tokenizer", "tasks", "strategy", "out_path", "metadata",
              "predictions_path", "evaluators"]), evaluators=EVALUATORS)
periodic_eval_fn = functools.partial(run.periodic_eval_fn, evaluators=EVALUATORS)
tfds_task = functools.partial(run.tfds_task, build_dataset=tfds_classification_dataset)
tfrecord_task = functools.partial(run.tfrecord_task, make_dataset=make_dataset_for)
retrieval_task = functools.partial(run.retrieval_task, build_dataset=retrieval_dataset)

# ---- export
serving_limits = gin.external_configurable(serving_inputs.serving_limits, "serving_limits")
_export_for_serving = gin.external_configurable(
    exporter.export_for_serving, "export_for_serving",
    denylist=["model", "tokenizer", "export_dir", "class_names", "templates", "version",
              "gin_config", "crop_fraction", "antialias", "allow_nameless_classes"])


def export_for_serving(model, tokenizer, export_dir, class_names, templates, **kwargs):
    """exporter.export_for_serving with the export_for_serving.* bindings, serving_limits() as
    `limits` unless given, and gin's operative config as assets/operative_config.gin."""
    if kwargs.get("limits") is None:
        kwargs["limits"] = serving_limits()
    kwargs.setdefault("gin_config", config.operative_config_str)
    return _export_for_serving(model, tokenizer, export_dir, class_names, templates, **kwargs)

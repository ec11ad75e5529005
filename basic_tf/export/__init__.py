"""basic_tf.export: SavedModel signatures for TF Serving, its on-disk layout, and clients.

`export_for_serving(model, tokenizer, export_dir, class_names, templates, ...)` writes
<export_dir>/<model_name>/<version>/ and <export_dir>/models.config (see exporter.py for the
assets, signatures.py for the signatures, client.py for REST and gRPC requests).
"""
from basic_tf.export.exporter import export_for_serving
from basic_tf.export.inputs import ServingLimits, serving_limits

__all__ = ["export_for_serving", "ServingLimits", "serving_limits"]

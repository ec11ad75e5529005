r"""Sends one request to a basic_tf model on TF Serving (REST or gRPC) and prints the JSON result.

Signatures: classify (top-k baked classes), classify_with_labels (scores over --class_names,
optional --templates), embed_image, embed_text. Image files are sent as their encoded bytes.

Examples:
  python3 tools/serving_client.py --server=127.0.0.1:8501 --model_name=fashion \
      --images=shoe.png --images=shirt.jpg
  python3 tools/serving_client.py --protocol=grpc --server=127.0.0.1:8500 --model_name=fashion \
      --signature=classify_with_labels --images=shoe.png --class_names=boot --class_names=sandal
  python3 tools/serving_client.py --server=127.0.0.1:8501 --signature=embed_text \
      --texts='a photo of a dog'
"""
import json
import sys

from absl import app, flags

from basic_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("server", "127.0.0.1:8501", "host:port of the REST (8501) or gRPC (8500) API.")
flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "REST JSON or gRPC PredictRequest.")
flags.DEFINE_string("model_name", "basic", "Served model name.")
flags.DEFINE_integer("version", None, "Model version; default: the newest the server has.")
flags.DEFINE_string("signature", "classify", "Signature to call (one of those above).")
flags.DEFINE_multi_string("images", [], "Image file (JPEG or PNG); repeat for a batch.")
flags.DEFINE_multi_string("texts", [], "Text for embed_text; repeat for a batch.")
flags.DEFINE_multi_string("class_names", [], "Class name for classify_with_labels; repeat.")
flags.DEFINE_multi_string("templates", [], "Template with {c} for classify_with_labels; repeat. "
                          "Default: the templates baked into the export.")
flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the answer.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from basic_tf.export import client, signature_table

    if FLAGS.signature not in signature_table.SIGNATURES:
        raise app.UsageError(f"--signature={FLAGS.signature!r} is not one of "
                             f"{list(signature_table.SIGNATURES)}")
    images = []
    for path in FLAGS.images:
        with open(path, "rb") as f:
            images.append(f.read())
    inputs = {"images": images, "texts": FLAGS.texts, "class_names": FLAGS.class_names,
              "templates": FLAGS.templates}
    cls = client.RestClient if FLAGS.protocol == "rest" else client.GrpcClient
    try:
        wanted = signature_table.SIGNATURES[FLAGS.signature].inputs
        inputs = {name: values for name, values in inputs.items() if name in wanted and values}
        outputs = cls(FLAGS.server, FLAGS.model_name, FLAGS.version,
                      timeout=FLAGS.timeout).predict(FLAGS.signature, inputs)
    except (client.ServingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({name: value.tolist() for name, value in outputs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)

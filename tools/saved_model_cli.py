"""TensorFlow's saved_model_cli, able to load basic_tf exports (TF Text ops registered first).

The stock `saved_model_cli` cannot load a SavedModel that uses custom ops: `run` fails with
"Op type not registered 'SentencepieceOp'". This wrapper imports tensorflow_text (which registers
them) and hands over to the stock tool. `run` uses the TF1 session loader, the same kind of
loader as TF Serving, so it is the local check that a server can run the export.

  python3 tools/saved_model_cli.py show --dir /tmp/serve/basic/1 --all
  python3 tools/saved_model_cli.py run --dir /tmp/serve/basic/1 --tag_set serve \
      --signature_def classify --inputs images=images.npy   # npy: object array of file bytes
"""
import tensorflow_text  # noqa: F401  (registers SentencepieceOp and the other TF Text ops)
from tensorflow.python.tools import saved_model_cli

if __name__ == "__main__":
    saved_model_cli.main()

"""The one data config: how images and texts are turned into model inputs.

Training (`make_dataset`), evaluation (`basic_tf.zeroshot`, tools/evaluate.py) and export
(`basic_tf.export`, tools/export.py) all see images and texts the same way:

  field               type   meaning                                  gin binding (make_dataset.)
  image_size          int    side of the square image the model sees  image_size
  channels            int    always 3: records decode to RGB (schema) -
  seq_len             int    token ids per text, EOS included         seq_len
  tokenizer_path      str    SentencePiece .model                     tokenizer_path
  eval_crop_fraction  float  centre square side / shorter image side  eval_crop_fraction
  antialias           bool   antialiased resize                       antialias

The top builds it (basic_tf/from_gin_data.py `data_config()`) from each value exactly as gin
hands it to `make_dataset` in training: the bound value with macros resolved
(`make_dataset.seq_len = %SEQ_LEN`), else `make_dataset`'s own default. Tools may override a
value with an explicit flag; nothing is guessed from elsewhere. `check_values` refuses values
out of range and `check_model` a config the model cannot take, naming the binding to change.
"""
import dataclasses
from typing import Optional

CHANNELS = 3  # every record decodes to [H, W, 3] uint8 (grayscale is stored as RGB)
FIELDS = ("image_size", "seq_len", "tokenizer_path", "eval_crop_fraction", "antialias")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """See the module docstring. `sources` says where each value came from (for errors)."""
    image_size: int
    seq_len: int
    tokenizer_path: Optional[str]
    eval_crop_fraction: float = 1.0
    antialias: bool = False
    channels: int = CHANNELS
    sources: tuple = ()

    def as_dict(self) -> dict:
        """The fields (with channels) as a plain dict, for reports."""
        return {field: getattr(self, field) for field in FIELDS + ("channels",)}

    def source(self, field: str) -> str:
        """'flag', 'gin' or 'make_dataset default' for a field."""
        return dict(self.sources).get(field, "given")

    def describe(self, field: str) -> str:
        """e.g. "make_dataset.seq_len=64 (make_dataset default)": for messages."""
        return f"make_dataset.{field}={getattr(self, field)!r} ({self.source(field)})"

    def require_tokenizer(self) -> str:
        """The tokenizer path, or an error naming the binding and the flag."""
        if not self.tokenizer_path:
            raise ValueError("make_dataset.tokenizer_path is not bound in the gin files: bind it "
                             "(make_dataset.tokenizer_path = '/data/sp.model') or give --tokenizer")
        return self.tokenizer_path

    def check_model(self, image_size: int, max_text_len: int) -> "DataConfig":
        """Refuses an image size other than the model's, or texts longer than its text tower."""
        if self.image_size != image_size:
            raise ValueError(
                f"{self.describe('image_size')} differs from the model's "
                f"dual_encoder_config.image_size={image_size}: bind make_dataset.image_size = "
                f"{image_size} in the gin file (training reads the same binding)")
        if self.seq_len > max_text_len:
            raise ValueError(
                f"{self.describe('seq_len')} is longer than the text tower's "
                f"text_tower_config.max_len={max_text_len}: bind make_dataset.seq_len <= "
                f"{max_text_len} in the gin file (training reads the same binding)")
        return self

    def check_values(self) -> "DataConfig":
        """Raises ValueError naming a field whose value is out of range; -> self."""
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"{self.describe('image_size')} must be a positive integer")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"{self.describe('seq_len')} must be an integer >= 2 (a piece and "
                             "EOS)")
        if not 0.0 < float(self.eval_crop_fraction) <= 1.0:
            raise ValueError(f"{self.describe('eval_crop_fraction')} must be in (0, 1]")
        return self

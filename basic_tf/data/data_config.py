"""The one data config: how images and texts are turned into model inputs.

Training (`basic_tf.data.pipeline.make_dataset(input_context, data, ...)`), evaluation
(`basic_tf.zeroshot`, tools/evaluate.py) and export (`basic_tf.export`, tools/export.py) all
take it as an argument and so see images and texts the same way:

  field (make_dataset.)  type   default   meaning
  image_size             int    224       side of the square image the model sees
  channels               int    3         records decode to RGB (schema); no binding
  seq_len                int    64        token ids per text, EOS included
  tokenizer_path         str    required  SentencePiece .model
  eval_crop_fraction     float  1.0       centre square side / shorter image side
  antialias              bool   False     antialiased resize

The defaults are DataConfig's own (`field_defaults()`, the one table). The top
(basic_tf/from_gin_data.py) generates gin's `make_dataset.<field>` names and defaults from it,
and builds the config (`data_config()`) from each value exactly as gin hands it to training's
make_dataset: the bound value with macros resolved (`make_dataset.seq_len = %SEQ_LEN`),
else the default here. Tools may override a value with an explicit flag; nothing is guessed
from elsewhere. `check_values` refuses values out of range and `check_model` a config the model
cannot take, naming the binding to change.
"""
import dataclasses
from typing import Optional

CHANNELS = 3  # every record decodes to [H, W, 3] uint8 (grayscale is stored as RGB)
FIELDS = ("image_size", "seq_len", "tokenizer_path", "eval_crop_fraction", "antialias")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """See the module docstring. `sources` says where each value came from (for errors)."""
    image_size: int = 224
    seq_len: int = 64
    tokenizer_path: Optional[str]  # required (None only in a view that names no tokenizer)
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


def field_defaults() -> dict:
    """{field: default, or dataclasses.MISSING for a required one} for FIELDS, in that order:
    the one table of make_dataset's data defaults."""
    fields = {f.name: f for f in dataclasses.fields(DataConfig)}
    return {name: fields[name].default for name in FIELDS}

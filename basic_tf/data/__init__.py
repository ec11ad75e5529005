"""basic_tf.data: image-text TFRecords in, batches out. Knows nothing of models or training.

Nothing here reads gin: every setting is an argument (basic_tf/from_gin_data.py binds them).

  schema        the one TFRecord example format (image bytes, captions, label, id)
  sources       records from CSV/JSONL, class folders, NumPy arrays, local TFDS sets
  img2dataset   img2dataset's TFRecords read as they are (make_dataset.record_format)
  fashion_mnist the Debian package's Fashion-MNIST as arrays, with class names
  writer        size-bounded shards with caption/record de-duplication and stats sidecars
  validate      read shards back; report corrupt, empty and truncated records
  tokenizer     SentencePiece training and the in-graph Tokenizer (pad 0, EOS last)
  data_config   the one data config (image size, seq_len, tokenizer, eval crop)
  templates     the '{c}' class placeholder of caption and prompt templates
  augment       fused JPEG decode-and-crop, centre crop, flip
  limits        input_limits: pixels per image (read from the header), bytes per caption
  pipeline      make_dataset: sharding, shuffle, decode, skip-and-count, batch, tokenize
  skips         skipped records by cause, SkippedRecordsCounter, the stops for inputs that
                yield nothing (or too little)
  distributed   CheckpointableDistributedIterator: per-replica batches from one or several
                pipelines (a TPU slice: one per host), with a saveable position
  throughput    examples/s of the pipeline for a config (benchmarks)
"""

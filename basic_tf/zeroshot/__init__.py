"""basic_tf.zeroshot: zero-shot classification and retrieval evaluation.

  prompts     class names and prompt templates shipped as data files (data/*.json)
  classifier  build_zero_shot_classifier: prompt-ensembled class embeddings [D, C]
  evaluation  exact top-1 / top-k counts (and confusion) under any tf.distribute strategy
  retrieval   image<->text Recall@K with several captions per image
  inputs      TFDS classification sets and all-captions retrieval batches (imports basic_tf.data)
  labels      class names checked against (or mapped by) the records' label names
  prompt_checks  prompts cut at the token length, class names with unknown pieces
  report      JSON, a readable table, confusion-matrix PNG, per-image predictions (CSV/JSONL)
"""
from basic_tf.zeroshot.classifier import build_zero_shot_classifier
from basic_tf.zeroshot.evaluation import evaluate_classification
from basic_tf.zeroshot.prompts import load_class_names, load_templates
from basic_tf.zeroshot.retrieval import evaluate_retrieval, recall_at_k

__all__ = ["build_zero_shot_classifier", "evaluate_classification", "evaluate_retrieval",
           "load_class_names", "load_templates", "recall_at_k"]

"""What the tokenizer does to the zero-shot prompts, reported before they are embedded.

Two things cost accuracy silently: a prompt longer than the token length is cut (seq_len - 1
pieces, then EOS), which may cut the class name itself; and a class name with characters the
vocabulary never saw becomes unknown pieces (id 1), so two such names may embed alike.
Evaluation reports both; export refuses a class whose every prompt lost its name (its classifier
column would not depend on the name at all) unless told to accept it.
"""
import collections
from typing import Dict, List, Sequence

import sentencepiece as spm

from basic_tf.data.tokenizer import UNK_ID
from basic_tf.zeroshot.prompts import PLACEHOLDER


def check_prompts(tokenizer, class_names: Sequence[str], templates: Sequence[str],
                  examples: int = 3) -> Dict:
    """Tokenizes every prompt on the host (SentencePiece, as the graph does).

    Args:
      tokenizer: `basic_tf.data.tokenizer.Tokenizer` (model_proto, seq_len).
      class_names, templates: as for build_zero_shot_classifier ('{c}' = class name).
      examples: how many example prompts / names each finding keeps.

    Returns {"seq_len", "prompts", "cut", "cut_examples", "name_cut", "name_cut_examples",
    "classes_without_name" (every prompt lost the name), "unknown_classes" ({name: characters
    the vocabulary lacks})}.
    """
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    keep = tokenizer.seq_len - 1  # pieces before the EOS
    cut, name_cut = [], []
    lost = collections.Counter()
    for name in class_names:
        for template in templates:
            prompt = template.replace(PLACEHOLDER, name)
            if len(sp.encode(prompt)) > keep:
                cut.append(prompt)
                before = template.split(PLACEHOLDER, 1)[0]
                if len(sp.encode(before + name)) > keep:  # pieces up to the end of the name
                    name_cut.append(prompt)
                    lost[name] += 1
    unknown = {}
    for name in dict.fromkeys(class_names):
        if UNK_ID in sp.encode(name):
            unknown[name] = sorted({ch for ch in name if not ch.isspace()
                                    and UNK_ID in sp.encode(ch)})
    return {
        "seq_len": tokenizer.seq_len,
        "prompts": len(class_names) * len(templates),
        "cut": len(cut), "cut_examples": cut[:examples],
        "name_cut": len(name_cut), "name_cut_examples": name_cut[:examples],
        "classes_without_name": [n for n in class_names if lost[n] == len(templates)],
        "unknown_classes": unknown,
    }


def describe(report: Dict) -> List[str]:
    """Readable lines for a check_prompts report (none when nothing was found)."""
    lines = []
    if report["cut"]:
        lines.append(f"{report['cut']} of {report['prompts']} prompts are longer than seq_len="
                     f"{report['seq_len']} and were cut, e.g. {report['cut_examples'][0]!r}")
    if report["name_cut"]:
        lines.append(f"{report['name_cut']} prompts lost (part of) the class name to the cut, "
                     f"e.g. {report['name_cut_examples'][0]!r}")
    if report["classes_without_name"]:
        lines.append(f"{len(report['classes_without_name'])} classes lost their name in every "
                     f"prompt: {report['classes_without_name'][:5]}")
    if report["unknown_classes"]:
        shown = list(report["unknown_classes"].items())[:3]
        lines.append(f"{len(report['unknown_classes'])} class names tokenize to unknown pieces "
                     "(characters the vocabulary lacks): "
                     + ", ".join(f"{n!r} {chars}" for n, chars in shown))
    return lines

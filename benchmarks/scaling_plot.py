"""The scaling study's figure and table: both protocols of one dataset side by side.

Reads `scaling_study_<dataset>_<protocol>.json` (benchmarks/scaling_study.py) for every protocol
present in a directory; plots zero-shot top-1, retrieval R@1, the held-out - training loss gap
and the train - test zero-shot gap against batch size (log2 axis), mean +- 1 sample standard
deviation over seeds.
"""
import json
import os
from typing import Dict

PROTOCOL_LABELS = {"examples": "equal examples seen", "steps": "equal optimizer steps"}


def results_path(output_dir: str, dataset: str, protocol: str) -> str:
    return os.path.join(output_dir, f"scaling_study_{dataset}_{protocol}.json")


def figure_path(output_dir: str, dataset: str) -> str:
    return os.path.join(output_dir, f"scaling_study_{dataset}.png")


def load_protocols(output_dir: str, dataset: str) -> Dict[str, dict]:
    out = {}
    for protocol in PROTOCOL_LABELS:
        path = results_path(output_dir, dataset, protocol)
        if os.path.exists(path):
            with open(path) as f:
                out[protocol] = json.load(f)
    return out


def _label(protocol: str, results: dict) -> str:
    s = results["settings"]
    size = (f"{s['train_steps']} steps" if protocol == "steps"
            else f"{s['examples_seen']:,} examples")
    return f"{PROTOCOL_LABELS[protocol]} ({size})"


def plot(by_protocol: Dict[str, dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = ((axes[0, 0], [("zero_shot_test", "")], "zero-shot top-1 (Fashion-MNIST test)"),
              (axes[0, 1], [("i2t_r1", "image->text"), ("t2i_r1", "text->image")],
               "R@1 among held-out pairs"),
              (axes[1, 0], [("loss_gap", "")], "contrastive loss: held-out - training"),
              (axes[1, 1], [("accuracy_gap", "")], "zero-shot top-1: train - test"))
    markers = {"examples": "o", "steps": "s"}
    for ax, keys, ylabel in panels:
        for protocol, results in by_protocol.items():
            rows = results["summary"]
            for key, name in keys:
                if key not in rows[0]:
                    continue
                ax.errorbar([r["batch"] for r in rows], [r[key] for r in rows],
                            yerr=[r[key + "_std"] for r in rows], capsize=3,
                            marker=markers[protocol], ls="--" if name == "text->image" else "-",
                            label=_label(protocol, results) + (f", {name}" if name else ""))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("contrastive batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.axhline(0.0, color="grey", lw=0.5)
    any_results = next(iter(by_protocol.values()))
    s = any_results["settings"]
    fig.suptitle(f"{'+'.join(s['gin_files'])} on {s['dataset']}: lr {s['base_lr']:g} "
                 f"({'one rate for all batches' if s['lr_scaling'] == 'none' else 'sqrt rule'}), "
                 f"mean +- 1 sd over seeds; loss at batch {s['eval_batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(by_protocol: Dict[str, dict]) -> str:
    """Markdown: one row per protocol and batch size."""
    lines = ["| protocol | batch | steps | micro-batches | seeds | zero-shot top-1 | "
             "i2t R@1 / R@5 | t2i R@1 / R@5 | loss gap (held-out - train) | "
             "top-1 train - test | s per run |", "|" + "---|" * 11]

    def f(row, key, digits=3, sign=""):
        if key not in row:
            return "-"
        return f"{row[key]:{sign}.{digits}f} ± {row[key + '_std']:.{digits}f}"

    for protocol, results in by_protocol.items():
        for r in results["summary"]:
            recall = [f"{r[k]:.3f} / {r[k.replace('1', '5')]:.3f}" if k in r else "-"
                      for k in ("i2t_r1", "t2i_r1")]
            lines.append(f"| {protocol} | {r['batch']} | {r['steps']} | {r['micro_batches']} | "
                         f"{r['seeds']} | {f(r, 'zero_shot_test')} | {recall[0]} | {recall[1]} |"
                         f" {f(r, 'loss_gap', sign='+')} | {f(r, 'accuracy_gap', sign='+')} | "
                         f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def update(output_dir: str, dataset: str) -> str:
    """Redraws the dataset's figure from every protocol's results file; returns its path."""
    path = figure_path(output_dir, dataset)
    by_protocol = load_protocols(output_dir, dataset)
    if by_protocol:
        plot(by_protocol, path)
    return path

"""Runs benchmark figures and rewrites the results section of benchmarks/README.md.

  python -m benchmarks                 # every figure
  python -m benchmarks memory_remat    # some figures
  python -m benchmarks --table-only    # rebuild the README table from saved JSON
"""
import importlib
import sys
import time

from benchmarks import common

# One module per figure, in the order of the README. Each has run() -> dict and table(dict) -> str.
FIGURES = [
    "memory_accumulation",
    "openclip_speed",
    "mfu",
    "planner_memory",
    "input_pipeline",
    "serving_latency",
]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def rewrite_readme() -> None:
    sections = []
    for name in FIGURES:
        module = importlib.import_module(f"benchmarks.{name}")
        payload = common.load(name)
        if payload is None:
            sections.append(f"### {name}\n\nnot measured yet: `python -m benchmarks {name}`\n")
            continue
        sections.append(f"### {name}\n\n{module.__doc__.strip().splitlines()[0]}\n\n"
                        f"{module.table(payload)}\n\nMeasured {payload['machine']['date']}, "
                        f"{payload['machine']['cpus']} CPUs; JSON: `benchmarks/results/{name}.json`.\n")
    with open(common.README) as f:
        text = f.read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    with open(common.README, "w") as f:
        f.write(head + BEGIN + "\n" + "\n".join(sections) + END + tail)


def main(argv) -> None:
    names = [a for a in argv if not a.startswith("--")]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {FIGURES}")
    if "--table-only" not in argv:
        for name in names or FIGURES:
            start = time.time()
            print(f"[benchmarks] {name} ...", flush=True)
            payload = importlib.import_module(f"benchmarks.{name}").run()
            payload["wall_seconds"] = round(time.time() - start, 1)
            print(f"[benchmarks] {name}: {common.save(name, payload)} "
                  f"({payload['wall_seconds']} s)", flush=True)
    rewrite_readme()


if __name__ == "__main__":
    main(sys.argv[1:])

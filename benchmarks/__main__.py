"""Runs benchmark figures and rewrites the results section of benchmarks/README.md.

  python -m benchmarks                 # every figure
  python -m benchmarks memory_remat    # some figures
  python -m benchmarks --table-only    # rebuild the README table from saved JSON
"""
import importlib
import os
import resource
import sys
import time

from benchmarks import common

# One module per figure, in the order of the README. Each has run() -> dict and table(dict) -> str.
FIGURES = [
    "memory_accumulation",
    "openclip_speed",
    "mfu",
    "step_profile",
    "planner_memory",
    "sharding_memory",
    "input_pipeline",
    "serving_latency",
    "update_check",
    "xla_cpu_ops",
    "loss_memory",
    "xla_step",
]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def rewrite_readme() -> None:
    sections = []
    full = common.load("full_run")
    if full is not None:
        cpu, cores = full["children_cpu_seconds"], full["machine"]["cpus"]
        sections.append(f"Last full `python -m benchmarks` run: {full['wall_seconds'] / 60:.1f} "
                        f"minutes on {full['machine']['cpus']} CPUs, {full['machine']['date']}; "
                        f"1-minute load average {full['load_average_start']} at the start, "
                        f"{full['load_average_end']} at the end (other processes' share of the "
                        f"cores). The measuring processes used {cpu:.0f} CPU seconds: with the "
                        f"machine to itself the run would take between {cpu / 60 / cores:.1f} "
                        f"(every core busy) and {cpu / 60:.1f} minutes (one core busy). "
                        f"Wall seconds per figure: " + ", ".join(
                            f"{k} {v:.0f} s" for k, v in full["figure_seconds"].items()) + ".\n")
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
        begin, load_start, seconds = time.time(), round(os.getloadavg()[0], 1), {}
        for i, name in enumerate(names or FIGURES):
            start = time.time()
            print(f"[benchmarks] {i + 1}/{len(names or FIGURES)} {name} ... "
                  f"({time.time() - begin:.0f} s elapsed)", flush=True)
            payload = importlib.import_module(f"benchmarks.{name}").run()
            payload["wall_seconds"] = seconds[name] = round(time.time() - start, 1)
            print(f"[benchmarks] {name}: {common.save(name, payload)} "
                  f"({payload['wall_seconds']} s)", flush=True)
        total = round(time.time() - begin, 1)
        print(f"[benchmarks] done in {total / 60:.1f} minutes", flush=True)
        if not names:  # the whole suite: its wall time is the 20-minute budget
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            common.save("full_run", {"wall_seconds": total, "figure_seconds": seconds,
                                     "children_cpu_seconds": round(children.ru_utime
                                                                   + children.ru_stime, 1),
                                     "load_average_start": load_start,
                                     "load_average_end": round(os.getloadavg()[0], 1)})
    rewrite_readme()


if __name__ == "__main__":
    main(sys.argv[1:])

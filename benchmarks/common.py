"""Shared benchmark plumbing: child-process measurement, results JSON, markdown tables.

Peak memory is measured per subprocess (`ru_maxrss`), since TF's CPU allocator keeps no stats:
one configuration per process, reporting the peak RSS increase over the RSS just before the
first step. Step times are medians of timed steps after warm-up (tracing excluded).
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time

# Environment of every child that reports peak memory. glibc malloc's default mmap threshold is
# dynamic: once a large freed buffer raises it (up to 32 MB), later activation-sized buffers come
# from the heap arenas, and their freed pieces stay resident (fragmentation), so ru_maxrss grows
# with the number of distinct buffers a step ever freed rather than with what the step holds at
# once (models/tiny batch 1024, 4 micro-batches: 757 MB by default against 536 MB with this fixed
# threshold, 2026-11-29). A fixed threshold returns every buffer of 128 KB or more to the OS when
# TensorFlow frees it, so the peak RSS tracks the live tensors the planner counts (accelerator
# allocators do not keep such garbage either).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def steady_state_malloc() -> None:
    """After a MEMORY_ENV measurement, before timing in the same process: a fixed 32 MB mmap
    threshold (glibc's dynamic maximum, where the default settles once large buffers were freed)
    and no heap trimming, so buffers are reused as in a default process's steady state instead of
    being mapped, page-faulted and unmapped on every step."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc malloc.h
    if not (libc.mallopt(m_mmap_threshold, 32 * 2 ** 20) and
            libc.mallopt(m_trim_threshold, 2 ** 30)):
        raise RuntimeError("glibc mallopt refused the steady-state malloc settings")


# Thread settings our timed step is run under, each in its own child of the same run; a figure
# keeps the fastest and names it, since which one wins depends on the shape, on XLA and on the
# machine's load. TensorFlow's default on this 2-core machine is 2 inter-op threads, each using
# a 2-thread intra-op pool. (Intra 2 + inter 1 is 'inter1' here: intra-op defaults to the cores.)
# open_clip gets the same treatment with all cores / 1 thread (benchmarks/openclip_step.py).
TF_THREADS = {"default": {}, "inter1": {"TF_NUM_INTEROP_THREADS": "1"},
              "intra1": {"TF_NUM_INTRAOP_THREADS": "1"}}


def run_child_per_threads(module: str, config: dict, settings: dict = None) -> dict:
    """run_child under each TF_THREADS setting (or `settings`), one after another in the same
    run -> {setting name: the child's JSON}."""
    return {name: run_child(module, config, env=env)
            for name, env in (settings or TF_THREADS).items()}


def fastest(by_threads: dict, mode: str) -> dict:
    """The `mode` timing ("plain" / "xla") with the smallest step_s over run_child_per_threads'
    results, with the winning setting's name under "threads"."""
    name = min((n for n in by_threads if by_threads[n].get(mode)),
               key=lambda n: by_threads[n][mode]["step_s"])
    return dict(by_threads[name][mode], threads=name)


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")


def rss_mb() -> float:
    """Current resident set size of this process, MB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(module: str, config: dict, timeout: float = 900, env: dict = None) -> dict:
    """Runs `python -m <module> --child '<json config>'` and returns the JSON it prints last.

    env: extra environment variables of the child (e.g. MEMORY_ENV).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(config)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {module} {config} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark child {module} printed no JSON:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def run_children(module: str, configs: list, env: dict = None, workers: int = 2) -> list:
    """run_child for each config, `workers` at a time, results in the order of `configs`. Only
    for figures that measure memory (each child's own peak RSS), never time."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: run_child(module, c, env=env), configs))


def missing_gin(name: str, gin_file: str):
    """A skipped row {"config", "skipped"} (and a progress line) when gin file `gin_file` does
    not exist, else None: a figure still runs its other configurations."""
    from basic_tf.config import resolve_gin_file
    try:
        resolve_gin_file(gin_file)
        return None
    except FileNotFoundError:
        print(f"  {name}: skipped (gin file {gin_file!r} not found)", flush=True)
        return {"config": name, "skipped": f"gin file {gin_file!r} not found"}


def child_main(measure_fn) -> bool:
    """In a figure module's __main__: if invoked with --child, measure and print JSON."""
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        print(json.dumps(measure_fn(json.loads(sys.argv[2]))), flush=True)
        return True
    return False


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def save(name: str, payload: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    payload = dict(payload, machine=machine())
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


def load(name: str):
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def markdown_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def run_config_children(module: str, configs, summary, **extra) -> list:
    """One child per (name, gin files, bindings, batch) of `configs`, with TensorFlow's default
    threads (a skip row when the gin file is missing); prints `summary(row)` after each.
    -> the rows."""
    rows = []
    for name, gin_files, bindings, batch in configs:
        skipped = missing_gin(name, gin_files[0])
        if skipped:
            rows.append(skipped)
            continue
        rows.append(run_child(module, dict(name=name, gin=gin_files, bindings=bindings,
                                           batch=batch, **extra)))
        print(f"  {name}: {summary(rows[-1])}", flush=True)
    return rows

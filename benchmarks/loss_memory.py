"""Peak memory and time of the contrastive loss + its gradient w.r.t. the embeddings at N = 4,096 / 16,384 / 65,536: ours chunked (train.loss_chunk) and unchunked, open_clip's ClipLoss and SigLipLoss.

One process per point (`--child`), D = 512 float32, one device: random L2-normalised image and
text embeddings [N, D], then the loss and d loss / d embeddings (what the accumulation's middle
stage computes on the global batch). Ours runs under common.MEMORY_ENV as the other memory
figures; memory is the peak RSS increase over the RSS once the embeddings exist (and, for ours,
the function is traced). Time is the median of the timed calls after one untimed call (a single
timed call at 65,536, where a call takes minutes).

Each child runs under a memory limit (LIMIT_GIB, below this machine's 23 GiB so it stays usable):
the parent polls the child's RSS and kills it when the RSS passes the limit; such a point is
recorded as out of memory. open_clip_torch 3.3.0 has no chunked loss option (its SigLipLoss
exchanges whole per-rank blocks, ClipLoss builds the full logits), so it has no chunked row.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

from benchmarks import common

D = 512
SIZES = [4096, 16384, 65536]
CHUNK = 512
LIMIT_GIB = 20.0
# (row name, implementation, loss kind, chunk)
IMPLS = [("ours chunked", "ours", "softmax", CHUNK), ("ours unchunked", "ours", "softmax", 0),
         ("open_clip ClipLoss", "open_clip", "softmax", 0),
         ("ours chunked", "ours", "sigmoid", CHUNK), ("ours unchunked", "ours", "sigmoid", 0),
         ("open_clip SigLipLoss", "open_clip", "sigmoid", 0)]
SCALE, BIAS = 10.0, -10.0
# What a child's stderr says when its framework's allocator refuses a tensor (the process exits
# with an error, below the RSS limit: the unchunked sigmoid's [65536, 65536] gradient at 18 GiB).
OOM_MARKERS = ("OOM when allocating tensor", "DefaultCPUAllocator: can't allocate memory")


def _embeddings(n: int, seed: int):
    """Two float32 [n, D] arrays of unit rows (NumPy, so both frameworks get the same)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        x = rng.standard_normal((n, D), dtype=np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def _timed(call, repeats: int) -> tuple:
    """(seconds of the first call, median seconds of `repeats` more calls or None)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, (sorted(times)[len(times) // 2] if times else None)


def _measure_ours(cfg: dict, img, txt) -> tuple:
    import tensorflow as tf
    from basic_tf import losses
    bias = tf.constant(BIAS) if cfg["kind"] == "sigmoid" else None

    @tf.function
    def loss_and_grads(i, t):
        with tf.GradientTape() as tape:
            tape.watch([i, t])
            loss = losses.contrastive_loss(i, t, SCALE, kind=cfg["kind"], logit_bias=bias,
                                           chunk=cfg["chunk"])
        return (loss,) + tuple(tape.gradient(loss, [i, t]))

    i, t = tf.constant(img), tf.constant(txt)
    del img, txt
    spec = tf.TensorSpec([cfg["n"], D], tf.float32)
    loss_and_grads.get_concrete_function(spec, spec)  # tracing is not the loss's memory
    out = {}
    return i, t, lambda: out.update(loss=float(loss_and_grads(i, t)[0].numpy())), out


def _measure_open_clip(cfg: dict, img, txt) -> tuple:
    import torch
    from benchmarks.openclip_step import _import_open_clip
    _, loss_lib = _import_open_clip()
    loss_fn = loss_lib.ClipLoss() if cfg["kind"] == "softmax" else loss_lib.SigLipLoss()
    i = torch.from_numpy(img).requires_grad_()
    t = torch.from_numpy(txt).requires_grad_()
    scale, bias = torch.tensor(SCALE), torch.tensor(BIAS)
    out = {}

    def call():
        i.grad = t.grad = None
        args = (i, t, scale) if cfg["kind"] == "softmax" else (i, t, scale, bias)
        loss = loss_fn(*args)
        loss.backward()
        out["loss"] = float(loss.item())

    return i, t, call, out


def measure(cfg: dict) -> dict:
    """Child: cfg {impl, kind, chunk, n, repeats} -> peak RSS increase, times, loss."""
    img, txt = _embeddings(cfg["n"], 0)
    build = _measure_ours if cfg["impl"] == "ours" else _measure_open_clip
    i, t, call, out = build(cfg, img, txt)
    del img, txt
    before = common.rss_mb()
    first, steady = _timed(call, cfg["repeats"])
    return dict(cfg, peak_increase_mb=round(common.peak_rss_mb() - before, 1),
                rss_before_mb=round(before, 1), first_s=round(first, 3),
                step_s=round(steady if steady is not None else first, 3), loss=out["loss"],
                embeddings_mb=round(2 * cfg["n"] * D * 4 / 2 ** 20, 1))


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def run_limited(python: str, cfg: dict, env: dict, limit_bytes: float,
                timeout: float = 1800) -> dict:
    """`python -m benchmarks.loss_memory --child cfg`, killed when its RSS passes limit_bytes
    (polled every 20 ms; an allocation touches its pages as it is written, so the RSS climbs
    through the limit) -> its JSON, or cfg with "oom" (and the RSS seen) when killed or when
    its allocator refused a tensor (then "refused": the error line, one of OOM_MARKERS)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([python, "-m", "benchmarks.loss_memory", "--child", json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env))
    start, highest, killed = time.time(), 0, False
    while proc.poll() is None:
        highest = max(highest, _rss_bytes(proc.pid))
        if highest > limit_bytes or time.time() - start > timeout:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    if killed or proc.returncode == -signal.SIGKILL:  # ours, or the kernel's OOM killer
        reason = "timeout" if time.time() - start > timeout else "oom"
        return dict(cfg, **{reason: True, "rss_at_kill_mb": round(highest / 2 ** 20),
                            "seconds_to_kill": round(time.time() - start, 1)})
    if proc.returncode < 0:  # another signal: TensorFlow died allocating (SIGSEGV, SIGABRT)
        return dict(cfg, crashed=signal.Signals(-proc.returncode).name,
                    rss_at_kill_mb=round(highest / 2 ** 20),
                    seconds_to_kill=round(time.time() - start, 1), stderr_tail=stderr[-300:])
    refused = next((l.strip() for l in stderr.splitlines() if any(m in l for m in OOM_MARKERS)),
                   None)
    if proc.returncode != 0 and refused:
        return dict(cfg, oom=True, refused=refused[:160], rss_at_kill_mb=round(highest / 2 ** 20),
                    seconds_to_kill=round(time.time() - start, 1))
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"loss_memory child {cfg} failed ({proc.returncode}):\n"
                           f"{stderr[-3000:]}")
    return json.loads(lines[-1])


def run(sizes=None) -> dict:
    from benchmarks.openclip_speed import _openclip_python
    torch_python = _openclip_python()
    limit = LIMIT_GIB * 2 ** 30
    rows, load_start = [], os.getloadavg()
    for n in sizes or SIZES:
        for name, impl, kind, chunk in IMPLS:
            cfg = dict(name=name, impl=impl, kind=kind, chunk=chunk, n=n,
                       repeats=2 if n <= 16384 else 0)
            python, env = ((sys.executable, common.MEMORY_ENV) if impl == "ours"
                           else (torch_python, {}))
            rows.append(run_limited(python, cfg, env, limit))
            r = rows[-1]
            print(f"  N={n} {kind} {name}: " + (
                f"out of memory (refused at {r['rss_at_kill_mb']} MB: {r['refused']})"
                if r.get("refused") else
                f"out of memory (killed at {r['rss_at_kill_mb']} MB)" if r.get("oom") else
                f"crashed ({r['crashed']} at {r['rss_at_kill_mb']} MB)" if r.get("crashed") else
                f"+{r['peak_increase_mb']} MB, {r['step_s']} s, loss {r['loss']:.6f}"),
                flush=True)
    _ratios(rows)
    return {"d": D, "chunk": CHUNK, "limit_gib": LIMIT_GIB, "scale": SCALE, "bias": BIAS,
            "env": common.MEMORY_ENV, "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()], "rows": rows}


def _ratios(rows: list) -> None:
    """Per (N, kind): chunked time / unchunked time of ours where both completed."""
    for r in rows:
        if r["name"] != "ours chunked" or not _completed(r):
            continue
        plain = [u for u in rows if u["name"] == "ours unchunked" and u["n"] == r["n"]
                 and u["kind"] == r["kind"] and _completed(u)]
        if plain:
            r["time_vs_unchunked"] = round(r["step_s"] / plain[0]["step_s"], 3)


def _completed(r: dict) -> bool:
    return not (r.get("oom") or r.get("timeout") or r.get("crashed"))


def _cell(r: dict) -> list:
    if r.get("refused"):
        return [f"out of memory (allocation refused at {r['rss_at_kill_mb']:,} MB: "
                f"{_refused_tensor(r['refused'])})", "-", "-", "-"]
    if r.get("oom"):
        return [f"out of memory (> {r['rss_at_kill_mb']:,} MB)", "-", "-", "-"]
    if r.get("crashed"):
        return [f"crashed ({r['crashed']} at {r['rss_at_kill_mb']:,} MB)", "-", "-", "-"]
    if r.get("timeout"):
        return ["timed out", "-", "-", "-"]
    above = r["peak_increase_mb"]
    return [f"{above:,.0f}", f"{r['step_s']}", f"{r['loss']:.6f}",
            r.get("time_vs_unchunked", "")]


def _refused_tensor(line: str) -> str:
    """TensorFlow's 'OOM when allocating tensor with shape[65536,65536] and type float ...' ->
    'shape[65536,65536] float'; another framework's line as it is."""
    found = re.search(r"shape\[[0-9,]*\] and type \w+", line)
    return found.group(0).replace(" and type", "") if found else line


def table(payload: dict) -> str:
    rows = [[r["n"], r["kind"], r["name"] + (f" (C={r['chunk']})" if r["chunk"] else ""),
             f"{2 * r['n'] * payload['d'] * 4 / 2 ** 20:,.0f}"] + _cell(r)
            for r in payload["rows"]]
    env = " ".join(f"{k}={v}" for k, v in payload["env"].items())
    return (f"D = {payload['d']}, float32, one process per point under a "
            f"{payload['limit_gib']:g} GiB RSS limit (killed above it: out of memory); ours with "
            f"`{env}`. Load average (1/5/15 min) {payload['load_average_start']} at the start, "
            f"{payload['load_average_end']} at the end. Peak = RSS increase over the process "
            f"once the embeddings exist.\n\n" +
            common.markdown_table(["N", "loss", "implementation", "embeddings MB",
                                   "peak above embeddings MB", "loss + grad s", "loss",
                                   "time vs unchunked"], rows))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--sizes":  # a subset: python -m ... --sizes 4096
        payload = run([int(x) for x in sys.argv[2:]])
        print(table(payload))
    else:
        common.child_main(measure)

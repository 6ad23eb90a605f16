"""Long-context streaming decode: KV-cache policies against recurrent state, speed and memory.

    python benchmarks/longctx.py                          # T = 1024 … 8192, every row (≈ 10 min)
    python benchmarks/longctx.py --quick                  # T = 256, 512
    python benchmarks/longctx.py --policies none,window,h2o --mixers lstm --budget 128

A randomly initialised backbone of 4 layers (``--d-model`` wide, ``--heads`` heads) reads ``T``
random tokens one at a time through ``Backbone.stream_states`` under ``torch.no_grad``. The
softmax rows use rotary positions (any length) and differ only in the cache: ``none`` is the
plain growing cache of ``CausalSelfAttention.step``, ``full`` the same cache kept by the
``full`` policy, the others a cache policy at ``--budget`` entries per head and layer where the
policy takes a budget. The recurrent rows use another mixer in every layer.

Each cell runs in a fresh process (``spawn``), which builds the model, warms up on a few tokens,
then decodes and reports:

- tokens/s of the decode (the policy's bookkeeping and the per-step memory count included);
- the peak floats per sequence a layer's state held, read from its tensors (``stream_states``'s
  ``peaks``; quantized entries count their stored bits), the mean over the layers;
- the growth of the process's peak resident memory (``ru_maxrss``) over its value after
  imports, model build and warm-up: the memory the decode really took (the cache, its
  transient copies, the outputs, allocator slack).

Every cell is also given as a ratio to ``none`` at the same T. A cell whose decode takes over
``--seconds`` ends its row. All numbers come from one run, so the ratios are side by side.
"""

from __future__ import annotations

import argparse
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from iclab.models.backbone import Backbone
from iclab.models.caches import POLICIES, build_policy
from iclab.models.mixers import resolve_mixer
from iclab.specs import Spec, resolve_spec

ATTENTION = "softmax(positions=rotary)"
POLICY_ROWS = (
    "none,full,window,sink_window,h2o,tova,snapkv(mode=streaming),knorm,random,"
    "quantize(bits=4),merge"
)
MIXER_ROWS = "linear_attention,deltanet,gla,mamba,lstm"
WARMUP_TOKENS = 16


def with_budget(text: str, budget: int) -> str:
    """The policy spec with ``budget`` set, unless the policy has none or the text sets it."""
    cls, options = resolve_spec(text, POLICIES, what="cache policy")
    given = options.model_dump(exclude_unset=True)
    if "budget" in cls.Options.model_fields and "budget" not in given:
        options = cls.Options(**given, budget=budget)
    return str(Spec(cls, options))


def decode_cell(mixer: str, policy: str | None, length: int, args: dict) -> dict:
    """In a fresh process: decode ``length`` tokens, return seconds, peak floats per layer and
    peak-RSS growth in bytes."""
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    layers = [resolve_mixer(mixer)] * args["layers"]
    model = Backbone(layers, args["d_model"], args["heads"], n_positions=length).eval()
    tokens = torch.randn(args["batch"], length, args["d_model"])
    with torch.no_grad():
        warm_policy = build_policy(policy) if policy else None
        model.stream_states(tokens[:, :WARMUP_TOKENS], policy=warm_policy)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        started = time.perf_counter()
        _, _, peaks = model.stream_states(tokens, policy=build_policy(policy) if policy else None)
        seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "tokens/s": length * args["batch"] / seconds,
        "floats": sum(peaks) / len(peaks),
        "rss": 1024 * (after - before),
        "baseline": 1024 * before,
    }


def run_rows(rows: list[tuple[str, str, str | None]], args) -> dict[tuple[str, int], dict]:
    """Every (row, T) cell, each in its own spawned process; a slow cell ends its row."""
    cell_args = {
        "threads": args.threads,
        "layers": args.layers,
        "d_model": args.d_model,
        "heads": args.heads,
        "batch": args.batch,
    }
    results = {}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        for label, mixer, policy in rows:
            for length in args.lengths:
                cell = pool.submit(decode_cell, mixer, policy, length, cell_args).result()
                results[label, length] = cell
                print(
                    f"  {label} T={length}: {cell['seconds']:.1f} s, {cell['rss'] / 2**20:.1f} MiB",
                    flush=True,
                )
                if cell["seconds"] > args.seconds:
                    break
    return results


def table(title: str, rows, results, lengths, key: str, form: str, scale: float = 1.0) -> None:
    """One markdown table of ``cell[key]`` per row and T, with its ratio to ``none`` at that T."""
    print(f"\n## {title}")
    print("| row | " + " | ".join(f"T={t}" for t in lengths) + " |")
    print("| --- |" + " ---: |" * len(lengths))
    for label, _, _ in rows:
        cells = []
        for length in lengths:
            if (label, length) not in results:
                cells.append("–")
                continue
            number = results[label, length][key]
            reference = results.get(("none", length), {}).get(key)
            ratio = f" ({number / reference:.2f}×)" if reference else ""
            cells.append(form.format(number * scale) + ratio)
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default=POLICY_ROWS, help="'none': no policy")
    parser.add_argument("--mixers", default=MIXER_ROWS, help="recurrent mixers, every layer")
    parser.add_argument("--lengths", default="1024,2048,4096,8192")
    parser.add_argument("--quick", action="store_true", help="lengths 256,512")
    parser.add_argument("--budget", type=int, default=256, help="cache entries per head, layer")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    # One thread: at batch 1 and width 64 no op gains from a second, and two threads collapse
    # (20× slower here) whenever anything else shares the 2 cores.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0, help="a slower cell ends its row")
    args = parser.parse_args()
    args.lengths = [256, 512] if args.quick else [int(t) for t in args.lengths.split(",")]
    policies = [
        text if text == "none" else with_budget(text, args.budget)
        for text in args.policies.split(",")
        if text
    ]
    rows = [(text, ATTENTION, None if text == "none" else text) for text in policies]
    rows += [(mixer, mixer, None) for mixer in args.mixers.split(",") if mixer]
    print(
        f"# streaming decode: {args.layers} layers × {args.d_model} wide × {args.heads} heads, "
        f"batch {args.batch}, budget {args.budget}, {args.threads} threads, "
        f"torch {torch.__version__}; attention rows: {ATTENTION}"
    )
    started = time.perf_counter()
    results = run_rows(rows, args)
    lengths = args.lengths
    table("decode tokens/s (ratio to none)", rows, results, lengths, "tokens/s", "{:,.0f}")
    table(
        "peak state floats per sequence and layer, from the tensors (ratio to none)",
        rows,
        results,
        lengths,
        "floats",
        "{:,.0f}",
    )
    table(
        "peak RSS growth of the decode, MiB (ratio to none)",
        rows,
        results,
        lengths,
        "rss",
        "{:.1f}",
        scale=2**-20,
    )
    baselines = [cell["baseline"] / 2**20 for cell in results.values()]
    print(f"\nRSS after imports, model and warm-up: {min(baselines):.0f}–{max(baselines):.0f} MiB")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

"""iclab against the reference implementation of Garg et al. 2022, side by side in one run.

    python benchmarks/vs_reference.py                      # 2 rounds of 700 steps each
    python benchmarks/vs_reference.py --rounds 3 --steps 700
    python benchmarks/vs_reference.py --precision float32  # iclab in float32 too
    python benchmarks/vs_reference.py --micro-batches 2    # iclab's batch in two parts

The same model and training on both sides: GPT-2 style, 4 layers × 128 wide × 4 heads, d = 5,
21 points (42 tokens), batch 64, Adam at 3e-4, no curriculum, 2 threads. iclab runs as a user
runs it, ``iclab train`` with its progress bar, logging, TensorBoard and checkpoints, in
``--precision`` (default auto: bfloat16 on CPUs that multiply it fast, as the quickstart
trains; the reference always trains in float32) and in ``--micro-batches`` parts of the batch
(``train.micro_batches``: the same update, less activation memory, slower). The reference is
written the way Garg et al.'s code builds it: Hugging Face's ``GPT2Model`` (tanh GELU, a token
embedding table that is never used), a linear read-in and read-out, plain
``torch.optim.Adam``, no extras; it needs ``pip install transformers``, which iclab does not
depend on.

Each run is a fresh process, so its peak RSS is its own; the two alternate, round by round, so
a busy machine slows both alike. Steps 100-600 of each run are timed. The last two lines are
``speed ratio: X`` (iclab steps/s ÷ reference steps/s) and ``memory ratio: Y`` (iclab peak RSS ÷
reference peak RSS), medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

FIRST, LAST = 100, 600  # the timed steps

CONFIG = {
    "name": "vs-reference",
    "task": {"name": "linear_regression", "n_dims": 5, "n_points": 21},
    "model": {"mixer": "softmax", "n_layers": 4, "d_model": 128, "n_heads": 4},
    "train": {
        "batch_size": 64,
        "lr": 3.0e-4,
        "weight_decay": 0.0,
        "grad_clip": None,
        "schedule": "constant",
        "log_every": 50,
        "checkpoint_every": 500,
    },
    "eval": {"algorithms": []},
}

REFERENCE = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from transformers import GPT2Config, GPT2Model

    steps, first, last = (int(value) for value in sys.argv[1:4])
    torch.manual_seed(0)
    d, n, batch, width = 5, 21, 64, 128


    class TransformerModel(torch.nn.Module):  # Garg et al.'s models.py, as published
        def __init__(self):
            super().__init__()
            configuration = GPT2Config(
                n_positions=2 * n, n_embd=width, n_layer=4, n_head=4,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
            )
            self._read_in = torch.nn.Linear(d, width)
            self._backbone = GPT2Model(configuration)
            self._read_out = torch.nn.Linear(width, 1)

        def forward(self, xs, ys):
            ys_wide = torch.cat((ys.view(batch, n, 1), torch.zeros(batch, n, d - 1)), dim=2)
            zs = torch.stack((xs, ys_wide), dim=2).view(batch, 2 * n, d)
            output = self._backbone(inputs_embeds=self._read_in(zs)).last_hidden_state
            return self._read_out(output)[:, ::2, 0]


    model = TransformerModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    times = {}
    for step in range(steps):
        if step in (first, last):
            times[step] = time.perf_counter()
        xs = torch.randn(batch, n, d)
        w = torch.randn(batch, d, 1)
        ys = (xs @ w)[:, :, 0]
        optimizer.zero_grad()
        loss = (model(xs, ys) - ys).square().mean()
        loss.backward()
        optimizer.step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps_per_second": (last - first) / (times[last] - times[first]),
                      "peak_rss_mb": rss}))
    """
)


def peak_rss_of(command: list[str], environment: dict[str, str]) -> tuple[str, float]:
    """Run ``command``; its standard output and its peak RSS in MB (its own, not ours)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=environment, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed with {process.returncode}")
    return output, usage.ru_maxrss / 1024


def run_iclab(
    steps: int, environment: dict[str, str], precision: str, micro_batches: int
) -> dict[str, float]:
    """``iclab train`` on the shared config; steps/s from its metrics.jsonl times."""
    with tempfile.TemporaryDirectory() as directory:
        train = {"steps": steps, "precision": precision, "micro_batches": micro_batches}
        config = {**CONFIG, "train": {**CONFIG["train"], **train}}
        path = Path(directory) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        run = Path(directory) / "run"
        iclab = Path(sys.executable).with_name("iclab")
        command = [str(iclab), "train", str(path), "--out", str(run), "--threads", "2"]
        _, rss = peak_rss_of(command, environment)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        times = {row["step"]: row["time"] for row in rows}
        precision = json.loads((run / "run.json").read_text())["precision"]
    return {
        "steps_per_second": (LAST - FIRST) / (times[LAST] - times[FIRST]),
        "peak_rss_mb": rss,
        "precision": precision,
    }


def run_reference(steps: int, environment: dict[str, str]) -> dict[str, float]:
    command = [sys.executable, "-c", REFERENCE, str(steps), str(FIRST), str(LAST)]
    output, rss = peak_rss_of(command, environment)
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--micro-batches", type=int, default=1, help="iclab's train.micro_batches")
    args = parser.parse_args()
    if args.steps <= LAST:
        parser.error(f"--steps must exceed {LAST}: steps {FIRST}-{LAST} are timed")
    try:
        import transformers  # noqa: F401
    except ImportError:
        sys.exit("the reference needs Hugging Face transformers: pip install transformers")
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    results: dict[str, list[dict]] = {"iclab": [], "reference": []}
    for round_ in range(args.rounds):
        order = ("iclab", "reference") if round_ % 2 == 0 else ("reference", "iclab")
        for name in order:
            if name == "iclab":
                result = run_iclab(args.steps, environment, args.precision, args.micro_batches)
            else:
                result = run_reference(args.steps, environment)
            results[name].append(result)
            print(
                f"round {round_ + 1} {name:9} {result['steps_per_second']:6.2f} steps/s  "
                f"peak RSS {result['peak_rss_mb']:6.0f} MB"
                + (f"  ({result['precision']})" if "precision" in result else ""),
                flush=True,
            )
    speed = {
        name: statistics.median(r["steps_per_second"] for r in rs) for name, rs in results.items()
    }
    memory = {name: statistics.median(r["peak_rss_mb"] for r in rs) for name, rs in results.items()}
    print(f"speed ratio: {speed['iclab'] / speed['reference']:.2f}")
    print(f"memory ratio: {memory['iclab'] / memory['reference']:.2f}")


if __name__ == "__main__":
    main()

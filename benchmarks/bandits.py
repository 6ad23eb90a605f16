"""In-context bandit learners side by side: the bandit preset trained with each (history, mixer)
pair, then acting online on the same unseen bandits as the yardsticks.

    python benchmarks/bandits.py                                   # dpt and thompson, softmax
    python benchmarks/bandits.py --histories dpt --mixers softmax,mamba,lstm --steps 2000

Each run is configs/bandit.yaml with ``task.history`` and ``model.mixer`` set (``--steps``
training steps, one training seed), evaluated on ``--prompts`` bandits of the evaluation
stream, so every row meets the same bandits and reward noise. The table gives the online
cumulative regret after the whole horizon with its 95% interval, the paired difference from
Thompson sampling (true prior) with its interval, the offline regret after the last step, and
the training seconds; the yardsticks' online regrets follow.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from iclab.config import load_config
from iclab.run import evaluate_run, train_run


def interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", default="dpt,thompson")
    parser.add_argument("--mixers", default="softmax")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--prompts", type=int, default=1280)
    args = parser.parse_args()
    yardsticks = {}
    print("| history | mixer | online regret | − thompson | offline regret | train s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for history in args.histories.split(","):
            for mixer in args.mixers.split(","):
                config = load_config("bandit").updated(
                    task={"history": history},
                    model={"mixer": mixer},
                    train={"steps": args.steps},
                    eval={"n_prompts": args.prompts},
                )
                run = Path(scratch) / f"{history}-{mixer}"
                started = time.perf_counter()
                train_run(config, run, show_progress=False)
                seconds = time.perf_counter() - started
                evaluation = evaluate_run(run)
                last = config.task.n_points - 1
                final = {(p.learner, p.shift): p for p in evaluation.curves if p.k == last}
                versus = next(
                    d
                    for d in evaluation.differences
                    if d.learner == "model" and d.shift == "online" and d.k == last
                )
                online, offline = final["model", "online"], final["model", "none"]
                print(
                    f"| {history} | {mixer} | "
                    f"{interval(online.mean, online.ci_low, online.ci_high)} | "
                    f"{versus.mean:+.2f} [{versus.ci_low:+.2f}, {versus.ci_high:+.2f}] | "
                    f"{offline.mean:.3f} | {seconds:.0f} |",
                    flush=True,
                )
                yardsticks = {
                    learner: point
                    for (learner, shift), point in final.items()
                    if shift == "online" and learner != "model"
                }
    print()
    print(
        "yardsticks online (same bandits): "
        + ", ".join(
            f"{name} {interval(p.mean, p.ci_low, p.ci_high)}" for name, p in yardsticks.items()
        )
    )


if __name__ == "__main__":
    main()

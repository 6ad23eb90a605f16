"""How long the command line takes to answer, before and after a change, measured in one run.

    python benchmarks/cli_startup.py     # this checkout against the commit before issue 15
    python benchmarks/cli_startup.py --before REV --repeats 7

Each command runs in a fresh Python process (as a user types it), the checkout's and the
``--before`` revision's (extracted with ``git archive`` into a temporary directory) alternating,
so a busy machine slows both alike; the median wall time of each is printed, with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["tasks"], ["models"], ["algorithms"])
RUN_CLI = "import sys; sys.path.insert(0, sys.argv.pop(1)); from iclab.cli import app; app()"


def wall_time(source: Path, arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", RUN_CLI, str(source), *arguments],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="6bfc0c3", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "src"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
        sources = {"before": Path(directory) / "src", "after": ROOT / "src"}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for command in COMMANDS:
                for label, source in sources.items():
                    key = (" ".join(command), label)
                    times.setdefault(key, []).append(wall_time(source, command))
    print(f"iclab command wall time, median of {args.repeats} (before = {args.before})")
    print(f"{'command':12} {'before s':>9} {'after s':>9} {'ratio':>7}")
    for command in COMMANDS:
        name = " ".join(command)
        before = statistics.median(times[name, "before"])
        after = statistics.median(times[name, "after"])
        print(f"{name:12} {before:9.2f} {after:9.2f} {after / before:7.2f}")


if __name__ == "__main__":
    main()

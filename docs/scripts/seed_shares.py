"""What SPG's seed masks held over training, per arm of a study folder (docs/results.rst).

    python docs/scripts/seed_shares.py runs/methods-tuned runs/methods

For every arm whose runs logged seed statistics (``<head>.seed_<seed>_<share>`` columns of
``log.csv``: the shares of each seed mask's pixels that are object, background or ignored, mean
over each epoch's steps), prints a Markdown table of each seed mask's shares, the mean over the
epochs of a run and then over its seeds (trial folders count as the runs of a search's arm).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from spgkit.runs import RunFolder

SHARE = re.compile(r"(?P<head>\w+)\.seed_(?P<seed>\w+)_(?P<share>object|background|ignored)$")


def shares(study: Path) -> dict[str, dict[tuple[str, str], list[float]]]:
    """arm -> (seed mask, share) -> per-run mean over epochs, in percent."""
    found: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_path in sorted(p for p in study.glob("*/*") if (p / "log.csv").exists()):
        rows = RunFolder(run_path).read_log()
        for column in rows[0]:
            match = SHARE.match(column)
            if match:
                values = [float(r[column]) for r in rows if r[column] not in ("", "nan")]
                if values:
                    found[run_path.parent.name][(match["seed"], match["share"])].append(100 * float(np.mean(values)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="study folders (runs/<study>)")
    for folder in parser.parse_args().folders:
        for arm, table in shares(folder).items():
            masks = sorted({mask for mask, _ in table})
            runs = len(next(iter(table.values())))
            print(f"\n{folder.name} / {arm} ({runs} runs): % of each seed mask's pixels, mean over training\n")
            print("| Seed | Object | Background | Ignored |\n|---|---|---|---|")
            for mask in masks:
                cells = [f"{np.mean(table[(mask, s)]):.1f}" for s in ("object", "background", "ignored")]
                print(f"| {mask} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""The SPG collapse investigation's table (docs/concepts.rst): every run of ``studies/spg_collapse.py``
and of its training-level variants, one row per controlled change, paired by seed with the
reference SPG arm.

    python docs/scripts/collapse_table.py runs/

reads ``runs/spg_collapse`` and the variants' folders (see the study's docstring for their
commands) and prints the Markdown tables: the metrics, their paired differences, and what the
seed masks held over training (log.csv, mean over the steps of the run's one epoch and over seeds).
``--figures FOLDER`` also draws seed 0's first training image at a few steps, for the reference
and for gradient clipping (docs/_static/concepts/).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spgkit.data import SynthWSOL
from spgkit.figures import evolution_figure
from spgkit.report import differences_table, markdown_table, paired_differences, summarize
from spgkit.runs import RunFolder

#: Row name -> (study folder, arm). The first row is the reference every other one is paired with.
ROWS = {
    "spg (reference)": ("spg_collapse", "spg"),
    "B1, B2 unshared": ("spg_collapse", "spg_unshared"),
    "min-max seeds (B1, C)": ("spg_collapse", "spg_norm"),
    "C without feedback": ("spg_collapse", "spg_no_feedback"),
    "B2 seed (0.7, 0.05)": ("spg_collapse", "spg_b2_spg_code"),
    "heads' lr x1": ("spg_collapse_lr1", "spg"),
    "one-cycle schedule": ("spg_collapse_onecycle", "spg"),
    "grad clip 1": ("spg_collapse_clip1", "spg"),
    "cam (no SPG)": ("spg_collapse", "cam"),
}


def collect(out: Path) -> dict[str, list[dict]]:
    """Each row's finished runs (diverged ones included), from the metrics files under ``out``."""
    runs = {}
    for row, (study, arm) in ROWS.items():
        found = sorted((out / study / arm).glob("seed*/metrics.json"))
        if found:
            runs[row] = [json.loads(path.read_text()) for path in found]
    return runs


#: log.csv column -> what the seed table calls it (shares in %).
SEEDS = {
    "spg_b.seed_b2_background": "B2 seed: background",
    "spg_b.seed_b2_object": "B2 seed: object",
    "spg_b.seed_b1_object": "B1 seed: object",
    "spg_c.seed_c_object": "C seed: object",
    "spg_b.b1": "B1 loss",
}


def seed_table(out: Path) -> str:
    """What the seeds held, per row: every run's last log.csv row (finished runs only)."""
    lines = ["| Arm | Runs | " + " | ".join(SEEDS.values()) + " |", "|---|---|" + "---|" * len(SEEDS)]
    for row, (study, arm) in ROWS.items():
        last = [list(csv.DictReader(path.open()))[-1] for path in sorted((out / study / arm).glob("seed*/log.csv"))]
        if not last or "spg_b.b1" not in last[0]:
            continue
        cells = []
        for key in SEEDS:
            values = [float(r[key]) * (1 if key == "spg_b.b1" else 100) for r in last]
            cells.append("/".join(f"{v:.3g}" for v in values) if key == "spg_b.b1" else f"{np.mean(values):.1f}")
        lines.append(f"| {row} | {len(last)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: File -> (row, steps): the docs' figures, each seed 0's first training image at a few steps.
FIGURES = {
    "evolution_spg.jpg": ("spg (reference)", (0, 25, 50, 300)),
    "evolution_spg_clip.jpg": ("grad clip 1", (0, 25, 150, 300)),
}


def figures(out: Path, folder: Path) -> None:
    """Write :data:`FIGURES` into ``folder``."""
    for name, (row, steps) in FIGURES.items():
        study, arm = ROWS[row]
        run = RunFolder(out / study / arm / "seed0")
        recorded = run.read_snapshots()
        recorded = {**recorded, "images": recorded["images"][:1], "shots": [s for s in recorded["shots"] if s["step"] in steps]}
        config = torch.load(run.checkpoint, map_location="cpu", weights_only=True)["config"]
        png = (folder / name).with_suffix(".png")
        evolution_figure(recorded, config["mean"], config["std"], png)
        Image.open(png).convert("RGB").save(folder / name, quality=85)
        png.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder the studies ran into")
    parser.add_argument("--figures", type=Path, help="also write the evolution figures into this folder")
    args = parser.parse_args()
    out = args.out
    runs = collect(out)
    parts = SynthWSOL.diagnostics  # the studies' data: their part metrics are columns too
    print(markdown_table(summarize(runs, parts), parts))
    print(differences_table(paired_differences(runs, "spg (reference)", diagnostics=parts), parts))
    print(seed_table(out))
    if args.figures:
        figures(out, args.figures)


if __name__ == "__main__":
    main()

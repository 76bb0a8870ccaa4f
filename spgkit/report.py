"""Results of a study: the table (CSV and Markdown, mean and spread over seeds) and the figures."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spgkit.config import PROTOCOLS, Study  # noqa: E402
from spgkit.data import collate, eval_transform  # noqa: E402
from spgkit.evaluate import predict_maps  # noqa: E402
from spgkit.guidance import IGNORE  # noqa: E402
from spgkit.io import atomic_write_bytes, write_text  # noqa: E402
from spgkit.localization import largest_region_box  # noqa: E402
from spgkit.plugins import Registry  # noqa: E402
from spgkit.runs import StudyFolder, load_model  # noqa: E402
from spgkit.train import open_split  # noqa: E402

#: Columns of the results table, in order, with their headers. A column no run reports is left out.
COLUMNS = {
    "top1_acc": "Top-1 Acc",
    "gt_known_loc": "GT-known Loc",
    "top1_loc": "Top-1 Loc",
    "maxboxacc": "MaxBoxAcc",
    "maxboxaccv2": "MaxBoxAccV2",
    "pxap": "PxAP",
    "part_maxboxaccv2": "Part MaxBoxAccV2",
    "on_part": "On part",
    "object_covered": "Object covered",
    "cam_threshold": "CAM thr.",
}


def collect(study: Study, folder: StudyFolder) -> dict[str, list[dict[str, Any]]]:
    """Finished runs' metrics by arm, diverged runs' records included (arms or seeds still
    running are left out)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for arm in study.arms:
        for seed in study.seeds:
            run = folder.run(arm.name, seed)
            if run.metrics.exists():
                runs.setdefault(arm.name, []).append(run.read_metrics())
    return runs


def _scored(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The runs that did not diverge."""
    return {arm: [m for m in metrics if "diverged" not in m] for arm, metrics in runs.items()}


def _add_mean_std(row: dict[str, Any], key: str, values: list[float]) -> None:
    """``row[key]`` = mean, ``row[key_std]`` = sample standard deviation; one value has no spread,
    so it gets no ``_std`` entry (never a "± 0.0")."""
    row[key] = float(np.mean(values))
    if len(values) > 1:
        row[f"{key}_std"] = float(np.std(values, ddof=1))


def summarize(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per arm: mean and sample standard deviation (none for one seed) of every column
    over the seeds that did not diverge, and how many did."""
    rows = []
    for arm, every in runs.items():
        metrics = [m for m in every if "diverged" not in m]
        row: dict[str, Any] = {"arm": arm, "seeds": len(metrics), "protocol": "/".join(sorted({m["protocol"] for m in every}))}
        if len(metrics) < len(every):
            row["diverged"] = len(every) - len(metrics)
        for key in COLUMNS:
            values = [m[key] for m in metrics if key in m]
            if values:
                _add_mean_std(row, key, values)
        rows.append(row)
    return rows


#: Metrics compared with the baseline arm seed by seed.
PAIRED = ("top1_acc", "gt_known_loc", "maxboxaccv2", "pxap", "object_covered")


def paired_differences(runs: dict[str, list[dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    """One row per other arm: mean and sample std over seeds of (arm - baseline), and how many
    seeds the arm is ahead, per metric of :data:`PAIRED`, over the seeds both finished without
    diverging.

    Arms trained with the same seed see the same images in the same order, so the per-seed
    difference removes the share of seed-to-seed spread that both arms have in common.
    """
    runs = _scored(runs)
    reference = {m["seed"]: m for m in runs.get(baseline, [])}
    rows = []
    for arm, metrics in runs.items():
        pairs = [(m, reference[m["seed"]]) for m in metrics if m["seed"] in reference]
        if arm == baseline or not pairs:
            continue
        row: dict[str, Any] = {"arm": arm, "seeds": len(pairs)}
        for key in PAIRED:
            deltas = [m[key] - ref[key] for m, ref in pairs if key in m and key in ref]
            if deltas:
                _add_mean_std(row, key, deltas)
                row[f"{key}_ahead"] = sum(d > 0 for d in deltas)
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], headers: dict[str, str], cell) -> str:
    """One line per arm; a column per key of ``headers`` present in any row, ``cell(row, key)``
    filling it ("-" where the row lacks the key)."""
    keys = [k for k in headers if any(k in r for r in rows)]
    lines = ["| Arm | Seeds | " + " | ".join(headers[k] for k in keys) + " |"]
    lines.append("|---|---|" + "---|" * len(keys))
    for r in rows:
        cells = [cell(r, k) if k in r else "-" for k in keys]
        seeds = f"{r['seeds']}" + (f" (+{r['diverged']} diverged)" if r.get("diverged") else "")
        lines.append(f"| {r['arm']} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(row: dict[str, Any], key: str, fmt: str) -> str:
    """``mean ± std``, or the mean alone where there is one seed (no spread to show)."""
    std = row.get(f"{key}_std")
    return fmt.format(row[key]) + ("" if std is None else f" ± {std:.1f}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown: one row per arm, ``mean ± std`` per metric present in any row."""
    return _markdown(
        rows,
        COLUMNS,
        lambda r, k: f"{r[k]:.2f}" if k == "cam_threshold" else _mean_std(r, k, "{:.1f}"),
    )


def differences_table(rows: list[dict[str, Any]]) -> str:
    """The paired differences in Markdown: ``mean ± std (seeds ahead/seeds)`` per metric."""
    return _markdown(
        rows,
        {k: f"Δ {COLUMNS[k]}" for k in PAIRED},
        lambda r, k: f"{_mean_std(r, k, '{:+.1f}')} ({r[k + '_ahead']}/{r['seeds']})",
    )


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    keys = ["arm", "seeds"] + [k for k in columns if any(k in r for r in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_tables(study: Study, folder: StudyFolder) -> str:
    """Write ``results.csv``, ``results.md`` and, with two arms or more, ``differences.csv`` into
    the study's folder; return the Markdown. The differences compare every arm with the study's
    first arm, its baseline."""
    runs = collect(study, folder)
    rows = summarize(runs)
    _write_csv(folder.results_csv, rows, ["diverged", "protocol"] + [k for key in COLUMNS for k in (key, f"{key}_std")])
    many = any(row["seeds"] > 1 for row in rows)
    spread = "Mean ± sample std over seeds" if many else "One seed per arm, so no spread: a single run proves nothing"
    protocols = sorted({m["protocol"] for metrics in runs.values() for m in metrics})
    described = "; ".join(f"`{p}` protocol: {PROTOCOLS[p]}" for p in protocols)
    text = (
        f"# {study.name}\n\n{spread}; localization on the test split ({study.data.test_split}) in the "
        f"{described}.\n\n" + markdown_table(rows)
    )
    baseline = study.arms[0].name
    differences = paired_differences(runs, baseline)
    if differences:
        _write_csv(folder.differences_csv, differences, [k for key in PAIRED for k in (key, f"{key}_std", f"{key}_ahead")])
        paired = "mean ± sample std of" if many else "the value of"
        text += (
            f"\nDifference from {baseline}, paired by seed: {paired} (arm - {baseline}) over "
            f"the seeds both finished, and in brackets the seeds on which the arm is ahead.\n\n"
            + differences_table(differences)
        )
    text += reading(rows, differences, baseline)
    write_text(folder.results_md, text)
    return text


def reading(rows: list[dict[str, Any]], differences: list[dict[str, Any]], baseline: str) -> str:
    """A few sentences read off the numbers, for data with part annotations: whether the
    baseline's map sits on the part, which arm covers most of the object and by how much, and how
    much a difference that rests on few seeds can be trusted. Empty without part scores."""
    base = next((r for r in rows if r["arm"] == baseline), None)
    if base is None or "part_maxboxaccv2" not in base:
        return ""
    gap = base["part_maxboxaccv2"] - base["maxboxaccv2"]
    where = "on the part" if gap > 0 else "not on the part"
    lines = [
        f"{baseline}'s map sits {where}: its MaxBoxAccV2 is {base['part_maxboxaccv2']:.1f} against the part's box "
        f"and {base['maxboxaccv2']:.1f} against the object's ({gap:+.1f}); it covers {base['object_covered']:.1f} % "
        f"of the object, and {base['on_part']:.1f} % of what it keeps lies on the part."
    ]
    # An arm that lost its classification has a near-flat map, which "covers" the object by
    # covering everything: said apart, not ranked.
    lost = [d for d in differences if d.get("top1_acc", 0) < -20]
    ranked = sorted((d for d in differences if "object_covered" in d and d not in lost), key=lambda d: -d["object_covered"])
    if ranked:
        top = ranked[0]
        row = next(r for r in rows if r["arm"] == top["arm"])
        lines.append(
            f"{top['arm']} covers the most of the object: {row['object_covered']:.1f} %, {top['object_covered']:+.1f} "
            f"points on {baseline} (ahead on {top['object_covered_ahead']} of {top['seeds']} seeds), at "
            f"{top['maxboxaccv2']:+.1f} MaxBoxAccV2 and {top['top1_acc']:+.1f} Top-1."
        )
    for d in lost:
        row = next(r for r in rows if r["arm"] == d["arm"])
        lines.append(
            f"{d['arm']} lost its classification ({row['top1_acc']:.1f} % Top-1, {d['top1_acc']:+.1f} on {baseline}): "
            f"its map covers {row['object_covered']:.1f} % of the object because it covers nearly everything."
        )
    diverged = [f"{r['arm']} ({r['diverged']} of {r['seeds'] + r['diverged']})" for r in rows if r.get("diverged")]
    if diverged:
        lines.append(f"Diverged runs, left out of every number: {', '.join(diverged)}; their log.csv shows how the losses grew.")
    seeds = min(r["seeds"] for r in rows if r["seeds"]) if any(r["seeds"] for r in rows) else 0
    lines.append(
        "One seed proves nothing: run more (--seeds 0 1 2) before reading a difference as a result."
        if seeds == 1
        else f"Read a difference as a result only where an arm is ahead on most of the {seeds} seeds and the mean exceeds the spread."
    )
    return "\nReading (generated from the numbers above):\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _show_image(ax, image: torch.Tensor, mean, std) -> np.ndarray:
    rgb = (image.permute(1, 2, 0).numpy() * np.array(std) + np.array(mean)).clip(0, 1)
    ax.imshow(rgb)
    ax.set_xticks([])
    ax.set_yticks([])
    return rgb


def _draw_box(ax, box, color: str) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))


def overlay_figure(panels: dict[str, dict[str, Any]], batch: dict, mean, std, path: Path, protocol: str = "benchmark") -> None:
    """Images (rows) by arm (columns): the localization map over the image, GT boxes in green
    (a dataset's part boxes, where it has them, in yellow) and the predicted box (largest region
    at the arm's CAM threshold, in ``protocol``) in red."""
    n = len(batch["labels"])
    fig, axes = plt.subplots(n, len(panels), figsize=(2.2 * len(panels), 2.2 * n), squeeze=False)
    for col, (arm, panel) in enumerate(panels.items()):
        for row in range(n):
            ax = axes[row, col]
            _show_image(ax, batch["images"][row], mean, std)
            ax.imshow(panel["maps"][row], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for key, colour in (("boxes", "lime"), ("part_box", "yellow")):
                for box in batch[key][row] if batch.get(key) is not None else ():
                    _draw_box(ax, box, colour)
            box = largest_region_box(panel["maps"][row], panel["threshold"], protocol=protocol)
            if box is not None:
                x0, y0, x1, y1 = box
                _draw_box(ax, (x0, y0, x1 + 1, y1 + 1), "red")  # inclusive corners -> extent
            if row == 0:
                ax.set_title(arm, fontsize=9)
    _save(fig, path)


def localize_figure(image: np.ndarray, heat: np.ndarray, box, title: str, path: Path) -> None:
    """One (H, W, 3) image at its original size with its map stretched over it and the predicted
    box ``[x0, y0, x1, y1)``."""
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(4, 4 * height / width))
    ax.imshow(image)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    if box is not None:
        _draw_box(ax, box, "red")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path)


#: Below every figure of head visuals: how to read its two kinds of panel.
VISUALS_KEY = "maps: 0 (blue) to 1 (red); seed masks: object white, background black, ignored grey"


def _show_visual(ax, value: torch.Tensor) -> None:
    """A map in [0, 1] in colour, or a uint8 seed mask: object white, background black, ignored grey."""
    shown = value.float()
    if value.dtype == torch.uint8:
        ax.imshow(torch.where(shown == IGNORE, 0.5, shown).numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(shown.numpy(), cmap="jet", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def visuals_figure(visuals: dict[str, torch.Tensor], batch: dict, mean, std, path: Path) -> None:
    """What the heads offer figures, per image: maps in [0, 1] in colour, seed masks with object
    white, background black and ignored pixels grey."""
    keys = list(visuals)
    n = len(batch["labels"])
    fig, axes = plt.subplots(n, 1 + len(keys), figsize=(2.2 * (1 + len(keys)), 2.2 * n), squeeze=False)
    for row in range(n):
        _show_image(axes[row, 0], batch["images"][row], mean, std)
        for col, key in enumerate(keys, 1):
            _show_visual(axes[row, col], visuals[key][row])
            if row == 0:
                axes[row, col].set_title(key, fontsize=9)
    fig.supxlabel(VISUALS_KEY, fontsize=9)
    _save(fig, path)


def evolution_figure(recorded: dict, mean, std, path: Path, most: int = 6) -> None:
    """How the guidance evolves: for each fixed training image (blocks of rows) and at up to
    ``most`` points of training, evenly spread (rows), the CAM and every map and seed mask the
    heads offer, as :class:`~spgkit.train.Session` snapshots recorded them."""
    shots = recorded["shots"]
    if len(shots) > most:
        shots = [shots[round(i * (len(shots) - 1) / (most - 1))] for i in range(most)]
    keys = [k for k in shots[0] if k != "step"]
    images = recorded["images"]
    rows = [(i, shot) for i in range(len(images)) for shot in shots]
    fig, axes = plt.subplots(len(rows), 1 + len(keys), figsize=(1.8 * (1 + len(keys)), 1.8 * len(rows)), squeeze=False)
    for r, (i, shot) in enumerate(rows):
        _show_image(axes[r, 0], images[i], mean, std)
        axes[r, 0].set_ylabel(f"image {i + 1}, step {shot['step']}", fontsize=8)
        for c, key in enumerate(keys, 1):
            _show_visual(axes[r, c], shot[key][i])
            if r == 0:
                axes[r, c].set_title(key, fontsize=8)
    fig.supxlabel(VISUALS_KEY, fontsize=9)
    _save(fig, path)


def curves_figure(logs: dict[str, list[dict[str, str]]], path: Path) -> None:
    """Training loss and selection-split metrics per epoch, one line per arm."""
    panels = [("loss", "training loss"), ("val_top1_acc", "val Top-1 Acc (%)"), ("val_maxboxaccv2", "val MaxBoxAccV2 (%)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        for arm, rows in logs.items():
            points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=arm)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def write_figures(study: Study, folder: StudyFolder, registry: Registry | None = None) -> list[Path]:
    """Overlays (arms side by side), what each arm's heads offer figures (SPG's maps and seed
    masks, ACoL's erased region) and training curves, from the first seed's checkpoints, into the
    study's ``figures/``. Returns the files written."""
    registry = registry if registry is not None else Registry()
    protocol = study.evaluation.protocol
    seed = study.seeds[0]
    written: list[Path] = []
    panels: dict[str, dict[str, Any]] = {}
    logs: dict[str, list[dict[str, str]]] = {}
    batch = mean = std = None
    for arm in study.arms:
        run = folder.run(arm.name, seed)
        logs[arm.name] = run.read_log()
        if not run.metrics.exists() or "diverged" in run.read_metrics():
            continue
        model, config = load_model(run.checkpoint, registry)
        if batch is None:
            mean, std = config["mean"], config["std"]
            test = open_split(study, study.data.test_split, eval_transform(study.data.image_size, mean, std), registry)
            batch = collate([test[i] for i in range(min(study.figure_images, len(test)))])
        _, maps = predict_maps(model, batch["images"], batch["labels"], protocol)
        maps = maps.cpu().numpy() if isinstance(maps, torch.Tensor) else maps
        panels[arm.name] = {"maps": maps, "threshold": run.read_metrics()["cam_threshold"]}
        with torch.no_grad():  # with labels, heads build their guidance (eval mode: no dropout)
            out = model(batch["images"], batch["labels"])
        if run.snapshots.exists():
            path = folder.figures / f"evolution_{arm.name}.png"
            evolution_figure(run.read_snapshots(), mean, std, path)
            written.append(path)
        visuals = {f"{name}: {key}" if len(out.heads) > 1 else key: v for name, head in out.heads.items() for key, v in head.visuals.items()}
        if visuals:
            path = folder.figures / f"heads_{arm.name}.png"
            visuals_figure(visuals, batch, mean, std, path)
            written.append(path)
    if panels:
        overlay_figure(panels, batch, mean, std, folder.figures / "overlays.png", protocol)
        written.append(folder.figures / "overlays.png")
    if any(logs.values()):
        curves_figure(logs, folder.figures / "curves.png")
        written.append(folder.figures / "curves.png")
    return written

"""Figures of a study, from what its runs recorded when they were scored: overlays of the arms' maps and
boxes, what each head shows (SPG's maps and seed masks, ACoL's erased region), map snapshots over
training, training curves, box accuracy against the CAM threshold, and the images on which an arm
and the baseline disagree most. Written by :func:`write_figures`; the numbers are in
:mod:`spgkit.report`."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spgkit.boxes import table_boxes  # noqa: E402
from spgkit.config import Study  # noqa: E402
from spgkit.data import collate, eval_transform  # noqa: E402
from spgkit.data.diagnostics import diagnostics_of  # noqa: E402
from spgkit.guidance import IGNORE  # noqa: E402
from spgkit.io import atomic_write_bytes  # noqa: E402
from spgkit.localization import largest_region_box, score_maps  # noqa: E402
from spgkit.plugins import Registry  # noqa: E402
from spgkit.report import Collected, box_accuracy, box_hits  # noqa: E402
from spgkit.runs import RunFolder, StudyFolder, record_hash  # noqa: E402
from spgkit.splits import open_test  # noqa: E402


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
    # One box of spgkit's (half-open) convention; imshow puts pixel centres at integer coordinates,
    # so pixel column x0 starts at x0 - 0.5 and the box is x1 - x0 wide.
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))


#: The ground truth every overlay draws: the object's boxes, in green.
OBJECT_BOXES = {"boxes": "lime"}


def ground_truth_boxes(dataset) -> dict[str, str]:
    """What an overlay draws over each image of ``dataset``, batch key -> colour: the object's
    boxes in green, then the boxes its diagnostics name (SynthWSOL's part boxes, in yellow)."""
    diagnostics = diagnostics_of(dataset)
    return {**OBJECT_BOXES, **(diagnostics.figure_boxes if diagnostics is not None else {})}


def overlay_figure(
    panels: dict[str, dict[str, Any]], batch: dict, mean, std, path: Path, protocol: str = "benchmark", drawn: Mapping[str, str] | None = None
) -> None:  # fmt: skip
    """Images (rows) by arm (columns): the localization map over the image, the ground truth's
    boxes ``drawn`` (batch key -> colour, :func:`ground_truth_boxes`; by default
    :data:`OBJECT_BOXES`) and the predicted box (largest region at the arm's CAM threshold, in ``protocol``) in
    red.

    Each panel gives ``maps`` (N, H, W) and either ``threshold`` or ``boxes``, the predicted boxes
    already known (per image an array of :mod:`~spgkit.boxes`' convention, (0, 4) for
    none); optionally ``labels``, a caption per image."""
    drawn = OBJECT_BOXES if drawn is None else drawn
    n = len(batch["labels"])
    fig, axes = plt.subplots(n, len(panels), figsize=(2.2 * len(panels), 2.2 * n), squeeze=False)
    for col, (arm, panel) in enumerate(panels.items()):
        for row in range(n):
            ax = axes[row, col]
            _show_image(ax, batch["images"][row], mean, std)
            ax.imshow(panel["maps"][row], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for key, colour in drawn.items():
                for box in batch[key][row] if batch.get(key) is not None else ():
                    _draw_box(ax, box, colour)
            if "boxes" in panel:
                predicted = panel["boxes"][row]
            else:
                predicted = largest_region_box(panel["maps"][row], panel["threshold"], protocol=protocol)
            for box in predicted:
                _draw_box(ax, box, "red")
            if row == 0:
                ax.set_title(arm, fontsize=9)
            if "labels" in panel:
                ax.set_xlabel(panel["labels"][row], fontsize=8)
    _save(fig, path)


def localize_figure(image: np.ndarray, heat: np.ndarray, boxes: np.ndarray, title: str, path: Path) -> None:
    """One (H, W, 3) image at its original size with its map stretched over it and the predicted
    ``boxes`` (:mod:`~spgkit.boxes`' convention, in the image's pixels)."""
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(4, 4 * height / width))
    ax.imshow(image)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    for box in boxes:
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


def _visual_row(axes, image: torch.Tensor, shown: list[torch.Tensor], titles: list[str] | None, mean, std, fontsize: int) -> None:
    """One row of figure panels: the image, then each map or seed mask, titled where ``titles``."""
    _show_image(axes[0], image, mean, std)
    for k, value in enumerate(shown, 1):
        _show_visual(axes[k], value)
        if titles:
            axes[k].set_title(titles[k - 1], fontsize=fontsize)


def visuals_figure(visuals: dict[str, torch.Tensor], batch: dict, mean, std, path: Path) -> None:
    """What the heads offer figures, per image: maps in [0, 1] in colour, seed masks with object
    white, background black and ignored pixels grey."""
    keys = list(visuals)
    n = len(batch["labels"])
    fig, axes = plt.subplots(n, 1 + len(keys), figsize=(2.2 * (1 + len(keys)), 2.2 * n), squeeze=False)
    for row in range(n):
        _visual_row(axes[row], batch["images"][row], [visuals[key][row] for key in keys], keys if row == 0 else None, mean, std, 9)
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
        _visual_row(axes[r], images[i], [shot[key][i] for key in keys], keys if r == 0 else None, mean, std, 8)
        axes[r, 0].set_ylabel(f"image {i + 1}, step {shot['step']}", fontsize=8)
    fig.supxlabel(VISUALS_KEY, fontsize=9)
    _save(fig, path)


def curves_figure(logs: dict[str, list[dict[str, str]]], path: Path) -> None:
    """Training loss and selection-split metrics per epoch, one line per arm; a metric no run
    logged (a study without per-epoch validation) gets no panel. The loss axis is logarithmic
    where the losses span more than two orders of magnitude (a diverging arm beside the others)."""
    panels = [("loss", "training loss"), ("val_top1_acc", "val Top-1 Acc (%)"), ("val_maxboxaccv2", "val MaxBoxAccV2 (%)")]
    curves = {
        key: {arm: [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")] for arm, rows in logs.items()}
        for key, _ in panels
    }
    panels = [(key, title) for key, title in panels if any(curves[key].values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for arm, points in curves[key].items():
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=arm)
        values = [v for points in curves[key].values() for _, v in points]
        if key == "loss" and min(values) > 0 and max(values) > 100 * min(values):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    _save(fig, path)


def threshold_figure(images: dict[str, dict[int, dict[str, np.ndarray]]], path: Path) -> None:
    """Box accuracy on the test split against the CAM threshold, from the runs' per-image records
    (:attr:`~spgkit.report.Collected.images`), one colour per arm: the mean over seeds, a band from
    the lowest seed to the highest, and a dotted line at each threshold a seed chose on the
    selection split.

    Left, the largest region's box at IoU 50 %: at the chosen threshold this is GT-known Loc, and
    its peak is MaxBoxAcc. Right, the best box of any region, averaged over MaxBoxAccV2's IoU
    levels (30, 50, 70): MaxBoxAccV2 averages each level's own peak, so it is at least this
    curve's peak."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for i, (arm, by_seed) in enumerate(images.items()):
        records = list(by_seed.values())
        accuracy = [box_accuracy(box_hits(r)) for r in records]
        curves = (np.stack([a["largest"][0] for a in accuracy]), np.stack([a["best"][0].mean(0) for a in accuracy]))
        thresholds, levels = records[0]["thresholds"], records[0]["iou_thresholds"]
        for ax, curve in zip(axes, curves):
            ax.plot(thresholds, curve.mean(0), color=f"C{i}", label=f"{arm} ({len(records)} seed{'s' if len(records) > 1 else ''})")
            ax.fill_between(thresholds, curve.min(0), curve.max(0), color=f"C{i}", alpha=0.2, linewidth=0)
            for chosen in sorted({float(r["cam_threshold"]) for r in records}):
                ax.axvline(chosen, color=f"C{i}", linestyle=":", linewidth=1)
    levels = "/".join(f"{d:g}" for d in levels)  # a study scores every run at the same levels
    for ax, title in zip(axes, ("largest box, IoU ≥ 50 (MaxBoxAcc's curve)", f"best box, mean over IoU {levels} (MaxBoxAccV2's)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("CAM threshold (dotted: chosen on the selection split)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test box accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Mean over seeds; the band spans the lowest seed to the highest", fontsize=9, y=1.04)
    _save(fig, path)


def disagreements(arm: dict[str, np.ndarray], baseline: dict[str, np.ndarray], most: int) -> np.ndarray:
    """Positions in the test set of the (at most) ``most`` images whose chosen boxes' IoUs differ
    most between two runs' per-image records, the largest difference first; ties keep test-set
    order, and images scored alike are left out."""
    gap = np.abs(arm["cam_iou"] - baseline["cam_iou"])
    order = np.argsort(-gap, kind="stable")[:most]
    return order[gap[order] > 0]


def _maps(recorded: np.ndarray, size: tuple[int, int], protocol: str) -> np.ndarray:
    """Recorded maps at feature resolution, resized and normalised as scoring did
    (:func:`~spgkit.localization.score_maps`)."""
    return score_maps(torch.from_numpy(recorded), size, protocol).cpu().numpy()


def disagreement_figure(drawn: dict[str, np.ndarray], records: dict[str, dict[str, np.ndarray]], picks: np.ndarray, test, mean, std, path: Path, protocol: str) -> None:
    """The images of ``test`` at positions ``picks`` (rows) for two arms (columns, the baseline
    first): each arm's map from its recorded maps in ``drawn`` (every test image's, at feature
    resolution), and its chosen box from its per-image record in ``records``, captioned with that
    box's IoU."""
    batch = collate([test[int(i)] for i in picks])
    for name, record in records.items():
        if batch["image_ids"] != record["image_id"][picks].tolist():
            raise ValueError(f"{name}'s per-image record does not list the test set's images: was the dataset changed since the run?")
    size = tuple(batch["images"].shape[-2:])
    panels = {
        name: {"maps": _maps(drawn[name][picks], size, protocol), "boxes": table_boxes(record["cam_box"][picks]), "labels": [f"IoU {v:.2f}" for v in record["cam_iou"][picks]]}
        for name, record in records.items()
    }
    overlay_figure(panels, batch, mean, std, path, protocol, ground_truth_boxes(test))


def write_trials_figure(path: Path, spaces: dict[str, tuple], trials: dict[str, list], chosen: dict[str, Any], objective: str) -> None:
    """A hyperparameter search (:mod:`spgkit.tune`): one row per arm, one panel per searched value
    (a pair's low and high apart), the selection objective of each finished trial against it,
    diverged trials as red crosses along the bottom and the chosen trial as a star."""
    draws = {arm: [(p, end) for p in params for end in ((1, 0) if p.kind == "pair" else (None,))] for arm, params in spaces.items()}
    cols = max(len(d) for d in draws.values())
    fig, axes = plt.subplots(len(draws), cols, figsize=(3.2 * cols, 2.6 * len(draws)), squeeze=False)
    finished = [t.value for every in trials.values() for t in every if t.state == "COMPLETE"]
    floor = min(finished, default=0.0) - 2
    for row, (arm, panels) in zip(axes, draws.items()):
        for ax, (p, end) in zip(row, panels):
            _trials_panel(ax, p, end, trials[arm], chosen.get(arm), floor)
            name = p.path.replace("heads.", "", 1).replace(".args.", ".").replace("training.", "", 1)
            ax.set_title(f"{arm}: {name}" + ("" if end is None else (" low", " high")[1 - end]), fontsize=9)
        row[0].set_ylabel(f"selection {objective}")
        for ax in row[len(panels) :]:
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def _trials_panel(ax, p, end: int | None, trials: list, chosen: Any, floor: float) -> None:
    def x(t):
        return t.values[p.path] if end is None else t.values[p.path][end]

    done = [t for t in trials if t.state == "COMPLETE"]
    ax.scatter([x(t) for t in done], [t.value for t in done], s=18, color="tab:blue")
    failed = [t for t in trials if t.state == "FAIL"]
    ax.scatter([x(t) for t in failed], [floor] * len(failed), marker="x", color="tab:red", s=24, label="diverged" if failed else None)
    if chosen is not None:
        ax.scatter([x(chosen)], [chosen.value], marker="*", s=150, color="gold", edgecolor="black", zorder=3)
    ax.margins(x=0.08, y=0.15)
    if p.kind == "log":  # the whole searched range on the axis: where the trials fell in it shows
        ax.set_xscale("log")
        ax.set_xlim(p.low / 1.4, p.high * 1.4)
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
    elif p.kind != "choice":
        pad = 0.05 * (p.high - p.low)
        ax.set_xlim(p.low - pad, p.high + pad)
    ax.tick_params(labelsize=8)


def write_figures(study: Study, folder: StudyFolder, collected: Collected, registry: Registry | None = None) -> list[Path]:
    """Into the study's ``figures/``, from what the first seed's runs recorded when scored
    (``figures.npz``; a run without one, from before spgkit kept it, is scored again by the next
    ``spgkit run``, and drawn in none of these): overlays (arms side by side), what each arm's
    heads offer figures (SPG's maps and seed masks, ACoL's erased region) and, from the runs'
    per-image records (where they have them), per arm the test images on which its chosen box
    and the baseline's differ most (``disagree_<arm>.png``, captioned with each box's IoU). Then
    map snapshots over training, training curves and box accuracy against the CAM threshold
    over every seed (:func:`threshold_figure`). Only the runs ``collected``
    (:func:`~spgkit.report.collect`) are drawn. Returns the files written."""
    seed = study.seeds[0]
    finished = {arm.name: m for arm in study.arms for m in collected.metrics.get(arm.name, []) if m["seed"] == seed}
    runs = {arm: folder.run(arm, seed) for arm in finished}
    drawn = {arm: data for arm, data in ((arm, _recorded(runs[arm], m)) for arm, m in finished.items()) if data is not None}
    written = _map_figures(study, folder, collected, drawn, registry if registry is not None else Registry(plugins=study.plugins)) if drawn else []
    for arm, data in drawn.items():
        if runs[arm].snapshots.exists():
            evolution_figure(runs[arm].read_snapshots(), *_mean_std(data), folder.figures / f"evolution_{arm}.png")
            written.append(folder.figures / f"evolution_{arm}.png")
    logs = {arm: run.read_log() for arm, run in runs.items()}
    if any(logs.values()):
        curves_figure(logs, folder.figures / "curves.png")
        written.append(folder.figures / "curves.png")
    if collected.images:
        threshold_figure(collected.images, folder.figures / "threshold.png")
        written.append(folder.figures / "threshold.png")
    return written


def _recorded(run: RunFolder, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """What ``run`` recorded for figures when it was scored, None where it has nothing of this
    scoring (diverged, or scored before spgkit kept ``figures.npz``)."""
    if "diverged" in metrics or not run.figure_data.exists():
        return None
    data = run.read_figure_data()
    return data if data["record"] == record_hash(metrics["record"]) else None


def _mean_std(data: dict[str, Any]) -> tuple[list[float], list[float]]:
    return data["mean"].tolist(), data["std"].tolist()


def _map_figures(study: Study, folder: StudyFolder, collected: Collected, drawn: dict[str, dict[str, Any]], registry: Registry) -> list[Path]:
    """The overlays, each arm's heads and its disagreements with the baseline, from the maps and
    visuals recorded in ``drawn`` (by arm), over the test images the runs were scored on."""
    protocol, seed, baseline = study.evaluation.protocol, study.seeds[0], study.arms[0].name
    mean, std = _mean_std(next(iter(drawn.values())))
    test = open_test(study, eval_transform(study.data.image_size, mean, std, study.data.resize), registry)
    batch = collate([test[i] for i in range(min(study.figure_images, len(test)))])
    size, n = tuple(batch["images"].shape[-2:]), len(batch["labels"])
    first = {arm: by_seed[seed] for arm, by_seed in collected.images.items() if seed in by_seed}
    written, panels = [], {}
    for arm, data in drawn.items():
        threshold = next(m["cam_threshold"] for m in collected.metrics[arm] if m["seed"] == seed)
        panels[arm] = {"maps": _maps(data["map"][:n], size, protocol), "threshold": threshold}
        compared = arm != baseline and baseline in drawn and {arm, baseline} <= first.keys()
        picks = disagreements(first[arm], first[baseline], study.figure_images) if compared else ()
        if len(picks):
            path = folder.figures / f"disagree_{arm}.png"
            disagreement_figure({k: drawn[k]["map"] for k in (baseline, arm)}, {k: first[k] for k in (baseline, arm)}, picks, test, mean, std, path, protocol)
            written.append(path)
        visuals = {key.removeprefix("visual/"): torch.from_numpy(v) for key, v in data.items() if key.startswith("visual/")}
        if visuals:
            visuals_figure(visuals, batch, mean, std, folder.figures / f"heads_{arm}.png")
            written.append(folder.figures / f"heads_{arm}.png")
    overlay_figure(panels, batch, mean, std, folder.figures / "overlays.png", protocol, ground_truth_boxes(test))
    return written + [folder.figures / "overlays.png"]

"""Results of a study: the table (CSV and Markdown, mean and spread over seeds), the paired
differences with bootstrap intervals and the generated reading. The figures are in
:mod:`spgkit.figures`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spgkit.config import PROTOCOLS, Study
from spgkit.data.diagnostics import Diagnostics, diagnostics_of
from spgkit.io import write_csv, write_text
from spgkit.plugins import Registry
from spgkit.runs import FIX, RunFileError, StudyFolder, mismatch, record_hash

#: The metrics of every dataset in the results table, in order, with their headers.
METRICS = {
    "top1_acc": "Top-1 Acc",
    "gt_known_loc": "GT-known Loc",
    "top1_loc": "Top-1 Loc",
    "maxboxacc": "MaxBoxAcc",
    "maxboxaccv2": "MaxBoxAccV2",
    "pxap": "PxAP",
}


def columns(diagnostics: type[Diagnostics] | None = None) -> dict[str, str]:
    """The columns of the results table, in order, with their headers: :data:`METRICS`, the
    dataset's own (its ``diagnostics``' columns, :mod:`spgkit.data.diagnostics`), and the CAM
    threshold each run chose. A column no run reports is left out of a table."""
    return {**METRICS, **(diagnostics.columns if diagnostics is not None else {}), "cam_threshold": "CAM thr."}


@dataclass
class Collected:
    """The runs a report may use: those whose record says they were scored with what the study
    asks for. ``metrics`` by arm (diverged runs' records included), ``images`` (their
    ``per_image.npz``) by arm and seed, and ``left_out``: a line per run that was not used, and why."""

    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images: dict[str, dict[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


def collect(study: Study, folder: StudyFolder, asked: dict[tuple[str, int], dict[str, Any]]) -> Collected:
    """The finished runs of ``study`` whose ``metrics.json`` records what ``asked[(arm, seed)]``
    (:func:`~spgkit.runs.scored_with`) says; runs not finished yet are skipped, runs scored with
    anything else are left out and listed. A ``per_image.npz`` is used only when it belongs to
    its metrics and reproduces their numbers (:class:`~spgkit.runs.RunFileError` otherwise)."""
    found = Collected()
    for arm in study.arms:
        for seed in study.seeds:
            run = folder.run(arm.name, seed)
            if not run.metrics.exists():
                continue
            metrics = run.read_metrics()
            changed = ["(recorded by an older spgkit)"] if "record" not in metrics else mismatch(metrics["record"], asked[(arm.name, seed)])
            if changed:
                found.left_out.append(f"{arm.name}/seed{seed}: scored with another configuration ({'; '.join(changed)})")
                continue
            found.metrics.setdefault(arm.name, []).append(metrics)
            if "diverged" in metrics or not run.per_image.exists():
                continue
            record = run.read_per_image()
            if record["record"] != record_hash(metrics["record"]):
                found.left_out.append(f"{arm.name}/seed{seed}: per_image.npz is from another scoring; its intervals are left out")
                continue
            check_per_image(run.per_image, record, metrics)
            found.images.setdefault(arm.name, {})[seed] = record
    return found


def check_per_image(path: Path, record: dict[str, np.ndarray], metrics: dict[str, Any]) -> None:
    """Raise :class:`~spgkit.runs.RunFileError` unless the per-image record gives the metrics'
    GT-known Loc and MaxBoxAccV2 (the numbers its intervals are computed from)."""
    scored = box_accuracy(box_hits(record))
    for key in BOOTSTRAPPED:
        if key in metrics and not abs(float(scored[key][0]) - metrics[key]) <= 1e-6:
            raise RunFileError(
                f"{path}: gives {METRICS[key]} {float(scored[key][0]):.2f} where metrics.json says {metrics[key]:.2f}; "
                f"it was edited or damaged; {FIX}"
            )


def box_hits(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per image of a run's ``per_image.npz``, 1.0 where its box counts as correct: ``largest``
    (N, T), the largest region's box reaches IoU 50 % at each threshold; ``best`` (N, L, T), the
    best box of any region reaches each IoU level; ``gt_known_loc`` (N,), the largest region's box
    at the chosen threshold reaches IoU 50 %. The comparisons are the evaluator's, on the same
    float64 IoUs, so the counts are its counts."""
    return {
        "largest": (record["largest_iou"] >= 50 / 100).astype(float),
        "best": np.stack([record["best_iou"] >= d / 100 for d in record["iou_thresholds"]], axis=1).astype(float),
        "gt_known_loc": (record["cam_iou"] >= 50 / 100).astype(float),
    }


def box_accuracy(hits: dict[str, np.ndarray], weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracies (%) from :func:`box_hits` with image ``i`` counted ``weights[r, i]`` times in
    resample ``r`` (each row of ``weights`` sums to N; by default one row of ones, the test set
    itself): ``largest`` (R, T), ``best`` (R, L, T) and ``gt_known_loc`` (R,) as in
    :func:`box_hits`, and ``maxboxaccv2`` (R,), each IoU level's best over thresholds, averaged
    over levels. With the default weights these are the numbers of ``metrics.json``."""
    n = len(hits["gt_known_loc"])
    weights = np.ones((1, n)) if weights is None else weights
    out = {key: np.tensordot(weights, value, axes=1) * 100.0 / n for key, value in hits.items()}
    out["maxboxaccv2"] = out["best"].max(2).mean(1)
    return out


#: Metrics whose paired difference gets a bootstrap interval: they follow from per_image.npz.
BOOTSTRAPPED = ("gt_known_loc", "maxboxaccv2")
#: Resamples of each bootstrap interval.
RESAMPLES = 2000
#: The seed of the bootstrap's generator: fixed, so a report is reproducible.
BOOTSTRAP_SEED = 0


def paired_intervals(
    arm: list[dict[str, np.ndarray]], baseline: list[dict[str, np.ndarray]], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of (arm - baseline), per metric of :data:`BOOTSTRAPPED`, from the
    ``per_image.npz`` records of the two arms, ``arm[k]`` and ``baseline[k]`` of the same seed.

    Each resample draws the test images with replacement, once for every seed and both arms (all
    runs scored the same test set, so one draw of it is shared), and the seeds with replacement
    (seeds and images are crossed factors, so both are resampled); it recomputes each run's
    metric, MaxBoxAccV2's best over thresholds included, and averages arm - baseline over the
    drawn seeds."""
    for a, b in zip(arm, baseline):
        if not np.array_equal(a["image_id"], b["image_id"]):
            raise ValueError("per-image records of different test sets cannot be paired")
    rng = np.random.default_rng(seed)
    n, seeds = len(baseline[0]["image_id"]), len(baseline)
    pairs = [(box_hits(a), box_hits(b)) for a, b in zip(arm, baseline)]
    deltas: dict[str, list[np.ndarray]] = {key: [] for key in BOOTSTRAPPED}
    chunk = max(1, 2**22 // n)  # resamples at a time: bounds the weights' memory on large test sets
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        # Row j of the weights counts how often each image is drawn in resample j.
        draws = rng.integers(0, n, (r, n)) + n * np.arange(r)[:, None]
        weights = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(float)
        drawn_seeds = rng.integers(0, seeds, (r, seeds))
        scored = [(box_accuracy(a, weights), box_accuracy(b, weights)) for a, b in pairs]
        for key in BOOTSTRAPPED:
            per_seed = np.stack([a[key] - b[key] for a, b in scored], axis=1)  # (r, seeds)
            deltas[key].append(np.take_along_axis(per_seed, drawn_seeds, axis=1).mean(1))
    return {key: tuple(float(v) for v in np.percentile(np.concatenate(d), [2.5, 97.5])) for key, d in deltas.items()}


def _scored(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The runs that did not diverge."""
    return {arm: [m for m in metrics if "diverged" not in m] for arm, metrics in runs.items()}


def _add_mean_std(row: dict[str, Any], key: str, values: list[float]) -> None:
    """``row[key]`` = mean, ``row[key_std]`` = sample standard deviation; one value has no spread,
    so it gets no ``_std`` entry (never a "± 0.0")."""
    row[key] = float(np.mean(values))
    if len(values) > 1:
        row[f"{key}_std"] = float(np.std(values, ddof=1))


def summarize(runs: dict[str, list[dict[str, Any]]], diagnostics: type[Diagnostics] | None = None) -> list[dict[str, Any]]:
    """One row per arm: mean and sample standard deviation (none for one seed) of every column
    (:func:`columns`, with the dataset's ``diagnostics``) over the seeds that did not diverge, and
    how many did."""
    rows = []
    for arm, every in runs.items():
        metrics = [m for m in every if "diverged" not in m]
        row: dict[str, Any] = {"arm": arm, "seeds": len(metrics), "protocol": "/".join(sorted({m["protocol"] for m in every}))}
        if len(metrics) < len(every):
            row["diverged"] = len(every) - len(metrics)
        for key in columns(diagnostics):
            values = [m[key] for m in metrics if key in m]
            if values:
                _add_mean_std(row, key, values)
        rows.append(row)
    return rows


#: Metrics of every dataset compared with the baseline arm seed by seed.
PAIRED = ("top1_acc", "gt_known_loc", "maxboxaccv2", "pxap")


def paired(diagnostics: type[Diagnostics] | None = None) -> tuple[str, ...]:
    """The metrics compared with the baseline arm seed by seed: :data:`PAIRED`, then those the
    dataset's ``diagnostics`` pair."""
    return PAIRED + (tuple(diagnostics.paired) if diagnostics is not None else ())


def paired_differences(
    runs: dict[str, list[dict[str, Any]]], baseline: str, images: dict[str, dict[int, dict[str, np.ndarray]]] | None = None,
    diagnostics: type[Diagnostics] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per other arm: mean and sample std over seeds of (arm - baseline), and how many
    seeds the arm is ahead, per metric of :func:`paired` (with the dataset's ``diagnostics``),
    over the seeds both finished without diverging. Given the runs' per-image records
    (:attr:`Collected.images`) for all those seeds, also the bootstrap interval of
    :func:`paired_intervals` per metric of :data:`BOOTSTRAPPED` (``<metric>_ci_low`` and
    ``<metric>_ci_high``).

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
        for key in paired(diagnostics):
            deltas = [m[key] - ref[key] for m, ref in pairs if key in m and key in ref]
            if deltas:
                _add_mean_std(row, key, deltas)
                row[f"{key}_ahead"] = sum(d > 0 for d in deltas)
        seeds = [m["seed"] for m, _ in pairs]
        mine, theirs = (images or {}).get(arm, {}), (images or {}).get(baseline, {})
        if all(seed in mine and seed in theirs for seed in seeds):
            intervals = paired_intervals([mine[seed] for seed in seeds], [theirs[seed] for seed in seeds])
            for key, (low, high) in intervals.items():
                row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
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


def markdown_table(rows: list[dict[str, Any]], diagnostics: type[Diagnostics] | None = None) -> str:
    """The results table in Markdown: one row per arm, ``mean ± std`` per metric of
    :func:`columns` present in any row."""
    return _markdown(
        rows,
        columns(diagnostics),
        lambda r, k: f"{r[k]:.2f}" if k == "cam_threshold" else _mean_std(r, k, "{:.1f}"),
    )


def differences_table(rows: list[dict[str, Any]], diagnostics: type[Diagnostics] | None = None) -> str:
    """The paired differences in Markdown: ``mean ± std (seeds ahead/seeds)`` per metric of
    :func:`paired`, then ``[low, high]`` per bootstrap interval."""
    names = columns(diagnostics)
    headers = {k: f"Δ {names[k]}" for k in paired(diagnostics)} | {f"{k}_ci_low": f"Δ {names[k]} [95% CI]" for k in BOOTSTRAPPED}

    def cell(r: dict[str, Any], k: str) -> str:
        if k.endswith("_ci_low"):
            return f"[{r[k]:+.1f}, {r[k.replace('_low', '_high')]:+.1f}]"
        return f"{_mean_std(r, k, '{:+.1f}')} ({r[k + '_ahead']}/{r['seeds']})"

    return _markdown(rows, headers, cell)


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    write_csv(path, rows, ["arm", "seeds"] + [k for k in keys if any(k in r for r in rows)])


#: The results table's row for the centre baseline.
CENTER = "centre baseline"


def write_tables(
    study: Study, folder: StudyFolder, collected: Collected, center: dict[str, Any] | None = None, preface: str = "",
    registry: Registry | None = None,
) -> str:  # fmt: skip
    """Write ``results.csv``, ``results.md`` and, with two arms or more, ``differences.csv`` into
    the study's folder from the runs ``collected`` (:func:`collect`); return the Markdown. The
    differences compare every arm with the study's first arm, its baseline. ``center``, the
    metrics of the centre baseline on the same test split (:func:`spgkit.score.center_baseline`),
    is a row of the Markdown table below the arms (``results.csv`` holds the arms alone). ``preface``
    (Markdown) follows the title: how the arms were configured, e.g. :func:`spgkit.tune.preface`.
    The study's dataset reader, looked up in ``registry`` (by default the study's plugins'), adds
    its diagnostics' columns, differences and reading (:mod:`spgkit.data.diagnostics`)."""
    registry = registry if registry is not None else Registry(plugins=study.plugins)
    diagnostics = diagnostics_of(registry.dataset(study.data.name))
    runs, shown = collected.metrics, columns(diagnostics)
    rows = summarize(runs, diagnostics)
    _write_csv(folder.results_csv, rows, ["diverged", "protocol"] + [k for key in shown for k in (key, f"{key}_std")])
    many = any(row["seeds"] > 1 for row in rows)
    text = _heading(study, runs, many, preface)
    centre = [{"arm": f"*{CENTER}*", "seeds": "-", **{k: center[k] for k in shown if k in center}}] if center else []
    text += markdown_table(rows + centre, diagnostics)
    if center:
        text += (
            f"\n*{CENTER}*: the same centred Gaussian map for every test image, scored in the same protocol (no network): "
            "what a method must beat for its maps to say anything about where the object is.\n"
        )
    if collected.left_out:
        text += "\nLeft out, scored with another configuration than this study's (re-run it to train or score them again):\n\n"
        text += "".join(f"- {line}\n" for line in collected.left_out)
    baseline = study.arms[0].name
    differences = paired_differences(runs, baseline, collected.images, diagnostics)
    if differences:
        text += _write_differences(folder, differences, baseline, many, diagnostics)
    text += reading(rows, differences, baseline, runs, center, diagnostics)
    write_text(folder.results_md, text)
    return text


def _heading(study: Study, runs: dict[str, list[dict[str, Any]]], many: bool, preface: str) -> str:
    """The Markdown above the table: title, ``preface``, and what the numbers are (spread, split,
    protocol), with a warning where the CAM threshold was chosen on the test split."""
    spread = "Mean ± sample std over seeds" if many else "One seed per arm, so no spread: a single run proves nothing"
    protocols = sorted({m["protocol"] for metrics in runs.values() for m in metrics})
    described = "; ".join(f"`{p}` protocol: {PROTOCOLS[p]}" for p in protocols)
    text = f"# {study.name}\n\n{preface}"
    if study.data.select_on_test:
        text += (
            f"**The CAM threshold was chosen on the test split ({study.data.test_split})** (`data.select_on_test`): "
            "every number at a chosen threshold is optimistic.\n\n"
        )
    return text + f"{spread}; localization on the test split ({study.data.test_split}) in the {described}.\n\n"


def _write_differences(
    folder: StudyFolder, differences: list[dict[str, Any]], baseline: str, many: bool, diagnostics: type[Diagnostics] | None
) -> str:  # fmt: skip
    """Write ``differences.csv``; return the Markdown that presents the differences and their table."""
    intervals = [f"{key}_ci_{end}" for key in BOOTSTRAPPED for end in ("low", "high")]
    keys = [k for key in paired(diagnostics) for k in (key, f"{key}_std", f"{key}_ahead")]
    _write_csv(folder.differences_csv, differences, keys + intervals)
    value = "mean ± sample std of" if many else "the value of"
    text = (
        f"\nDifference from {baseline}, paired by seed: {value} (arm - {baseline}) over "
        f"the seeds both finished, and in brackets the seeds on which the arm is ahead."
    )
    if any(intervals[0] in d for d in differences):
        text += (
            f" The [95% CI] columns: a 95 % percentile interval of the difference by a paired bootstrap "
            f"({RESAMPLES} resamples, each drawing the test images and the seeds with replacement "
            "and finding MaxBoxAccV2's best thresholds anew)."
        )
    return text + "\n\n" + differences_table(differences, diagnostics)


def near_chance(metrics: list[dict[str, Any]]) -> bool:
    """Whether a run's Top-1 accuracy (mean over its seeds) cannot be told from guessing: at most
    chance (one over the number of classes) plus 2.58 binomial standard errors of a guesser on
    its test images (a one-sided 99.5 % bound)."""
    scored = [m for m in metrics if "num_classes" in m and "top1_acc" in m]
    if not scored:
        return False
    chance = 1 / scored[0]["num_classes"]
    bound = 100 * (chance + 2.58 * (chance * (1 - chance) / scored[0]["test_images"]) ** 0.5)
    return float(np.mean([m["top1_acc"] for m in scored])) <= bound


def reading(
    rows: list[dict[str, Any]], differences: list[dict[str, Any]], baseline: str,
    runs: dict[str, list[dict[str, Any]]] | None = None, center: dict[str, Any] | None = None,
    diagnostics: type[Diagnostics] | None = None,
) -> str:  # fmt: skip
    """A few sentences read off the numbers: which arms cannot be told from chance or localise no
    better than the centre baseline; what the dataset's ``diagnostics`` read off theirs, unless
    the baseline is at chance (SynthWSOL: whether the baseline's map sits on the part, which arm
    covers most of the object and by how much); and how much a difference that rests on few seeds
    can be trusted. Empty when there is nothing to say."""
    runs = runs or {}
    chance = [r["arm"] for r in rows if near_chance([m for m in runs.get(r["arm"], []) if "diverged" not in m])]
    lines = []
    if chance:
        lines.append(
            f"At chance: {', '.join(chance)} (Top-1 no better than guessing among the classes, within sampling error): "
            "their maps follow no class, and no difference involving them means anything."
        )
    if center and "maxboxaccv2" in center:
        below = [r["arm"] for r in rows if r.get("maxboxaccv2", np.inf) <= center["maxboxaccv2"]]
        if below:
            lines.append(
                f"No better than a centred Gaussian: {', '.join(below)} (MaxBoxAccV2 at most the centre baseline's "
                f"{center['maxboxaccv2']:.1f}): on this data their maps say nothing about where the object is."
            )
    base = next((r for r in rows if r["arm"] == baseline), None)
    if diagnostics is not None and base is not None and baseline not in chance:
        lines += diagnostics.reading(rows, [d for d in differences if d["arm"] not in chance], base)
    diverged = [f"{r['arm']} ({r['diverged']} of {r['seeds'] + r['diverged']})" for r in rows if r.get("diverged")]
    if diverged:
        lines.append(f"Diverged runs, left out of every number: {', '.join(diverged)}; their metrics.json says at which step.")
    if lines:
        single = [r["arm"] for r in rows if r["seeds"] == 1]
        if max((r["seeds"] for r in rows), default=0) <= 1:
            lines.append("One seed proves nothing: run more (--seeds 0 1 2) before reading a difference as a result.")
        else:
            line = "Read a difference as a result only where an arm is ahead on most of its seeds and the mean exceeds the spread."
            if single:  # survivors of diverged runs, say
                line += f" {', '.join(single)}: one seed, which proves nothing."
            lines.append(line)
    if not lines:
        return ""
    return "\nReading (generated from the numbers above):\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"

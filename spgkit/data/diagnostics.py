"""Diagnostics a dataset contributes: metrics that only its own annotations allow (SynthWSOL's
part scores, :mod:`spgkit.data.synth_parts`), counted beside the generic metrics, tabled, paired
and read by the generic layers (:mod:`spgkit.evaluate`, :mod:`spgkit.report`,
:mod:`spgkit.figures`), which name none of them.

A reader offers them as its class attribute ``diagnostics``: a class that follows
:class:`Diagnostics`, or None (what every reader without any has, as a missing attribute).
:func:`diagnostics_of` finds it, on a reader class or under the wrappers a study puts around an
opened split (``Subset`` and others that keep the wrapped dataset as ``.dataset``), and checks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from spgkit.localization import resize_gt_boxes


class Diagnostics(Protocol):
    """The contract of a dataset's diagnostics. The class speaks for the tables (what its metrics
    are called, which are compared with the baseline, what the study's reading says of them, which
    boxes figures draw); an instance, made per scoring, counts its metrics batch by batch.

    ``columns``: metric key -> header in tables, in table order (after the generic metrics).
    ``paired``: the keys of ``columns`` compared with the baseline arm seed by seed.
    ``figure_boxes``: batch key -> colour, the dataset's boxes an overlay draws over each image
    (after the object's, in green).
    """

    columns: ClassVar[Mapping[str, str]]
    paired: ClassVar[Sequence[str]]
    figure_boxes: ClassVar[Mapping[str, str]]

    def __init__(self, thresholds: np.ndarray, cam_threshold: float | None, protocol: str) -> None:
        """Count at the evaluation's ascending ``thresholds``, at ``cam_threshold`` (None: no
        threshold was chosen, so metrics taken at one are left out) and in ``protocol``."""

    def update(self, batch: dict, maps: Any) -> None:
        """Add a batch of :func:`~spgkit.data.collate` read through
        :func:`~spgkit.data.eval_transform`, with its (N, H, W) maps in [0, 1] at the images'
        resolution, as :meth:`spgkit.evaluate.Scores.update` gets them."""

    def compute(self) -> dict[str, float]:
        """The metrics, keys among ``columns``; none where nothing was counted."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """The counts: sums over images, so that summing them over DDP ranks merges the ranks."""

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the counts with ``state`` (:meth:`state_dict`'s, possibly summed over ranks)."""

    @classmethod
    def reading(cls, rows: list[dict[str, Any]], differences: list[dict[str, Any]], base: dict[str, Any]) -> list[str]:
        """Lines of the study's generated reading (:func:`spgkit.report.reading`) from the
        results table's ``rows``, the paired ``differences`` of the arms not at chance, and
        ``base``, the baseline arm's row; ``[]`` where there is nothing to say."""


#: What :func:`diagnostics_of` checks a reader's ``diagnostics`` to have.
REQUIRED = ("columns", "paired", "figure_boxes", "update", "compute", "state_dict", "load_state_dict", "reading")


def diagnostics_of(dataset: Any) -> type[Diagnostics] | None:
    """The diagnostics class of the reader ``dataset`` is or wraps (a reader class, or an opened
    split under wrappers that keep it as ``.dataset``); None where it has none. One that lacks a
    part of :class:`Diagnostics` raises ``TypeError`` in one line naming the dataset."""
    reader = dataset
    while getattr(reader, "diagnostics", None) is None and hasattr(reader, "dataset"):
        reader = reader.dataset
    found = getattr(reader, "diagnostics", None)
    if found is None:
        return None
    missing = [name for name in REQUIRED if not hasattr(found, name)]
    if missing:
        name = reader.__name__ if isinstance(reader, type) else type(reader).__name__
        raise TypeError(
            f"dataset {name}: its diagnostics {getattr(found, '__qualname__', found)!r} lack {', '.join(missing)} "
            "(see spgkit.data.diagnostics.Diagnostics)"
        )
    return found


def gt_boxes(batch: dict, key: str, protocol: str) -> list[np.ndarray]:
    """Per image of ``batch``, the boxes of ``batch[key]`` (an ``original_<...>`` entry of
    :func:`~spgkit.data.transforms.keep_original_boxes`) on the image as the batch holds it,
    resized as ``protocol`` resizes ground truth (:func:`~spgkit.localization.resize_gt_boxes`)."""
    size = tuple(batch["images"].shape[-2:])
    return [resize_gt_boxes(boxes, original, size, protocol) for boxes, original in zip(batch[key], batch["original_size"])]

"""The regions of a localization map at every threshold, in two sets of definitions.

Default (:func:`default_regions`): the foreground of threshold ``tau`` is ``map >= tau`` on the float
map; regions are its 8-connected components with tight inclusive boxes; the largest has the most
pixels. Benchmark (:func:`benchmark_regions`): the WSOL benchmark's OpenCV definitions, bit for bit.
Both come from one :class:`~spgkit.localization.tree.MergeTree` per map.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from spgkit.localization.maps import (
    as_float_maps,
    benchmark_cuts,
    benchmark_uint8,
    check_protocol,
    normalize_maps,
    threshold_levels,
)
from spgkit.localization.tree import MergeTree, bincount, grid_index, merge_tree, pad_even


class Regions(NamedTuple):
    """Regions of one map at ascending integer ``cuts`` (the foreground of cut ``c`` is ``level > c``).

    ``boxes[k]`` (inclusive ``x0, y0, x1, y1``) belongs to cut ``cuts[box_cut[k]]``; the largest
    region at cut ``s`` is ``boxes[largest[s]]``, or none where ``largest[s]`` is -1.
    """

    cuts: np.ndarray
    box_cut: np.ndarray
    boxes: np.ndarray
    largest: np.ndarray


def _cells(Q: np.ndarray):
    """Corners (top-left, top-right, bottom-left, bottom-right) of every 2x2 cell of pixels."""
    return Q[:-1, :-1], Q[:-1, 1:], Q[1:, :-1], Q[1:, 1:]


def _winners(cut_of: np.ndarray, score: np.ndarray, num_cuts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-scoring entry of each cut: (entry index or -1, whether the best score is tied, mask of
    the entries reaching their cut's best score)."""
    best = np.full(num_cuts, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(best, cut_of, score)
    top = score == best[cut_of]
    winner = np.full(num_cuts, -1, dtype=np.int64)
    winner[cut_of[top]] = np.flatnonzero(top)
    tied = np.bincount(cut_of[top], minlength=num_cuts) > 1
    return winner, tied, top


def _raster_index(shape: tuple[int, int], width: int, frame: int = 0) -> np.ndarray:
    # Row-major position in the image of every pixel of a grid that may have a frame of width 1.
    ys = np.arange(shape[0])[:, None] - frame
    xs = np.arange(shape[1])[None, :] - frame
    return ys * width + xs


def _largest(tree: MergeTree, levels: np.ndarray, cuts: np.ndarray, nodes, snap, size, last_wins: bool) -> np.ndarray:
    """Entry of the largest region at each cut (-1 if none). Ties go to the region whose first
    pixel in row-major order comes last (``last_wins``) or first."""
    winner, tied, top = _winners(snap, size, len(cuts))
    if tied.any():
        grid = pad_even(levels, tree.low)
        tree.set_first(grid, _raster_index(grid.shape, levels.shape[1]))
        pick = np.flatnonzero(top & tied[snap])
        first = tree.first(nodes[pick], cuts[snap[pick]])
        again = _winners(snap[pick], first if last_wins else -first, len(cuts))[0]
        winner[tied] = pick[again[tied]]
    return winner


def default_regions(levels: np.ndarray, cuts: np.ndarray, num_levels: int) -> Regions:
    """Regions of the default mode: 8-connected components of ``levels > cut``, tight inclusive boxes,
    and the largest region by pixel count (ties: the one whose first pixel in row-major order comes
    first). ``levels`` lie in ``[0, num_levels]``."""
    height, width = levels.shape
    tree = merge_tree(levels, 8, low=-1)
    tree.set_events(tree.leaf_histogram(tree.leaf_of_pixel[:height, :width], levels, num_levels + 1))
    nodes, snap = tree.alive(cuts)
    boxes = tree.extents(nodes, cuts[snap])
    winner = _largest(tree, levels, cuts, nodes, snap, tree.counts(nodes, cuts[snap]), last_wins=False)
    return Regions(cuts, snap, boxes, winner)


def _opencv_boxes(tight: np.ndarray, width: int, height: int) -> np.ndarray:
    # The benchmark turns boundingRect's (x, y, w, h) into (x, y, x + w, y + h), clipped to the last
    # column/row: one pixel past the region on the right and at the bottom.
    out = tight.copy()
    out[:, 2] = np.minimum(tight[:, 2] + 1, width - 1)
    out[:, 3] = np.minimum(tight[:, 3] + 1, height - 1)
    return out


def benchmark_regions(U: np.ndarray, cuts: np.ndarray) -> Regions:
    """Regions exactly as OpenCV reports them in the WSOL benchmark, for the uint8 map ``U``.

    At cut ``c`` the binary image is ``U > c``. ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``
    returns one outer contour per 8-connected component and one inner contour per hole (a
    4-connected background component that does not touch the border); ``cv2.boundingRect`` gives
    ``(x, y, w, h)`` and the benchmark's box is ``(x, y, min(x + w, W - 1), min(y + h, H - 1))``.
    An outer contour spans its component's pixels; an inner contour runs through the foreground
    pixels around its hole, one pixel outside the hole on every side. With no contour at all the
    benchmark uses the box ``[0, 0, 0, 0]``.

    The largest contour is the first of maximal ``cv2.contourArea`` in OpenCV's order. That area is
    the area of the polygon through the contour's pixel centres: for an outer contour, the area of its
    component's cells (2x2 pixel squares with 4 foreground corners count 1, with 3 count 1/2) plus the
    areas of its holes' polygons; a hole's polygon encloses half of every cell with one pixel of the
    hole, all of every cell with two or more, and the polygons of the components inside it. OpenCV
    lists contours depth first, later-found siblings first (a raster scan finds a contour at its first
    pixel), so a component comes before its holes and, without holes, ties go to the component whose
    first pixel comes last. These rules were checked against OpenCV on random images.

    Holes are rare in smooth maps, so they are looked for only where the Euler characteristic
    (components minus holes, from local 2x2 counts) differs from the number of components; there the
    dual tree (:class:`_Holes`) gives them.
    """
    height, width = U.shape
    Q = U.astype(np.int16)  # signed, so that odd sizes can be padded with -1
    tree = merge_tree(Q, 8, low=-1)
    nodes, snap = tree.alive(cuts)
    num_components = np.bincount(snap, minlength=len(cuts))
    euler4 = _frame_euler_events(U)  # 4 x Euler characteristic, as events (see _frame_euler_events)
    if height > 1 and width > 1:
        TL, TR, BL, BR = _cells(U)
        lo1, hi1 = np.minimum(TL, TR), np.maximum(TL, TR)
        lo2, hi2 = np.minimum(BL, BR), np.maximum(BL, BR)
        mid_lo, mid_hi = np.maximum(lo1, lo2), np.minimum(hi1, hi2)
        # Sorted corners s1 <= s2 <= s3 <= s4: a cell has 4 foreground corners below s1, 3 below s2.
        s1, s2 = np.minimum(lo1, lo2), np.minimum(mid_lo, mid_hi)
        if (num_components > 1).any():  # areas only matter where regions compete
            lp = tree.leaf_of_pixel
            # A cell belongs to the region of a corner that is foreground whenever three corners
            # are: the top-left one unless it is the unique lowest corner, else the bottom-right one.
            leaf = np.where(TL >= s2, lp[: height - 1, : width - 1], lp[1:height, 1:width])
            hist1, hist2 = tree.leaf_histogram(leaf, s1, 256), tree.leaf_histogram(leaf, s2, 256)
            tree.set_events(hist1 + hist2)  # cell area in half pixels
            hist1, hist2 = hist1.sum(0), hist2.sum(0)
        else:
            tree.set_events(np.zeros((tree.num_leaves, 256), dtype=np.int64))
            hist1, hist2 = bincount(s1, 256), bincount(s2, 256)
        euler4 += hist1 - hist2
        euler4 += bincount(np.maximum(hi1, hi2), 256) - bincount(np.maximum(mid_lo, mid_hi), 256)
        for pair, other in (((TL, BR), (TR, BL)), ((TR, BL), (TL, BR))):
            # Cells whose two foreground corners are diagonal, between the two levels.
            top, rest = np.minimum(*pair), np.maximum(*other)
            diagonal = top > rest
            if diagonal.any():
                euler4 -= 2 * bincount(top[diagonal], 256)
                euler4 += 2 * bincount(rest[diagonal], 256)
    else:
        tree.set_events(np.zeros((1, 256), dtype=np.int64))
    tight = tree.extents(nodes, cuts[snap])
    area = tree.counts(nodes, cuts[snap])
    boxes = _opencv_boxes(tight, width, height)

    # Euler characteristic = components - holes, so holes exist where the two differ.
    above = np.concatenate([np.cumsum(euler4[::-1])[::-1], [0]])  # above[c + 1]: events above c
    hole_cuts = np.flatnonzero(4 * num_components != above[np.minimum(cuts + 1, 256)])
    has_holes = np.zeros(len(cuts), dtype=bool)
    has_holes[hole_cuts] = True
    plain = ~has_holes[snap]
    winner = np.full(len(cuts), -1, dtype=np.int64)
    found = _largest(tree, Q, cuts, nodes[plain], snap[plain], area[plain], last_wins=True)
    winner[found >= 0] = np.flatnonzero(plain)[found[found >= 0]]
    box_cut, all_boxes = [snap], [boxes]
    if len(hole_cuts):
        holes = _Holes(U, cuts, hole_cuts)
        winner[hole_cuts] = holes.largest(tree, nodes, snap, area)[hole_cuts]
        box_cut.append(holes.snap)
        all_boxes.append(holes.boxes)
    # Where nothing is left, the benchmark's box [0, 0, 0, 0] is the only one, and the largest.
    empty = np.flatnonzero(num_components == 0)
    winner[empty] = sum(len(b) for b in all_boxes) + np.arange(len(empty))
    box_cut.append(empty)
    all_boxes.append(np.zeros((len(empty), 4), dtype=np.int64))
    return Regions(cuts, np.concatenate(box_cut), np.concatenate(all_boxes), winner)


def _frame_euler_events(U: np.ndarray) -> np.ndarray:
    """Euler characteristic events of the cells that straddle the image frame (outside is background).

    Gray's bit-quad formula: with 8-connected foreground, 4 x Euler = n1 - n3 - 2 nD, counting the 2x2
    cells with one foreground corner, three, and two diagonal ones. As a function of the cut, a cell
    with sorted corners s1 <= s2 <= s3 <= s4 contributes +1 at s4, -1 at s3, -1 at s2 and +1 at s1
    (each counting below its level), plus -2 at s3 and +2 at s2 when its top two corners are diagonal.
    Cells on the frame have one or two image corners, so only their s4 and s3 terms remain.
    """
    lines = (U[0], U[-1], U[:, 0], U[:, -1])
    corners = [U[0, :1], U[0, -1:], U[-1, :1], U[-1, -1:]]
    tops = np.concatenate(corners + [np.maximum(line[:-1], line[1:]) for line in lines])
    seconds = np.concatenate([np.minimum(line[:-1], line[1:]) for line in lines])
    return bincount(tops, 256).astype(np.int64) - bincount(seconds, 256)


class _Holes:
    """Holes of ``U > c`` at the cuts ``cuts[hole_cuts]``: regions of the dual tree (levels
    ``255 - U`` above the dual cut ``254 - c``, 4-connectivity) inside a frame of always-background
    pixels, except the region that holds the frame."""

    def __init__(self, U: np.ndarray, cuts: np.ndarray, hole_cuts: np.ndarray):
        height, width = U.shape
        self.U, self.cuts, self.dual_cuts = U, cuts, 254 - cuts
        inner = 255 - U.astype(np.int16)
        P = np.full((height + 2, width + 2), 256, dtype=np.int16)
        P[1:-1, 1:-1] = inner
        attr = np.full_like(P, -2)
        attr[1:-1, 1:-1] = inner
        self.P, self.attr = P, attr
        self.tree = tree = merge_tree(P, 4, attr=attr, low=-2)
        outside = []
        node = int(tree.leaf_of_pixel[0, 0])
        while node >= 0:
            outside.append(node)
            node = int(tree.parent[node])
        self.is_outside = np.zeros(len(tree.level), dtype=bool)
        self.is_outside[outside] = True
        nodes, snap = tree.alive(self.dual_cuts[hole_cuts])
        keep = ~self.is_outside[nodes]
        self.nodes, self.snap = nodes[keep], hole_cuts[snap[keep]]
        self.tight = tree.extents(self.nodes, self.dual_cuts[self.snap]) - 1  # image coordinates
        # An inner contour's bounding rect is the hole's extent grown by one pixel on every side.
        self.boxes = _opencv_boxes(self.tight + np.array([-1, -1, 1, 1]), width, height)

    def _areas(self) -> np.ndarray:
        # A cell gives half a pixel to the hole of its lowest corner and half to that of its second
        # lowest (the highest and second highest dual keys); per hole this sums to the polygon rule.
        tree, P = self.tree, self.P
        bits = max(P.size - 1, 1).bit_length()
        key = (P.astype(np.int64) << bits) | grid_index(P.shape)
        TL, TR, BL, BR = _cells(key[1:-1, 1:-1])
        hi1, lo1 = np.maximum(TL, TR), np.minimum(TL, TR)
        hi2, lo2 = np.maximum(BL, BR), np.minimum(BL, BR)
        first = np.maximum(hi1, hi2)
        second = np.maximum(np.minimum(hi1, hi2), np.maximum(lo1, lo2))
        leaves = tree.leaf_of_pixel[: P.shape[0], : P.shape[1]].ravel()  # the tree pads to even sizes
        mask = (1 << bits) - 1
        hist = np.zeros((tree.num_leaves, 257), dtype=np.int64)
        for corner in (first.ravel(), second.ravel()):
            hist += tree.leaf_histogram(leaves[corner & mask], corner >> bits, 257)
        tree.set_events(hist)
        return tree.counts(self.nodes, self.dual_cuts[self.snap])

    def largest(self, tree: MergeTree, nodes, snap, area) -> np.ndarray:
        """Entry (into ``nodes``) of OpenCV's largest contour at every cut with holes (-1 elsewhere).

        Builds the inclusion tree of contours at those cuts, all at once: an outer contour's parent
        is the hole just above its first pixel (none if that is the outside), a hole's parent is the
        component just above its first pixel. A contour's area is the sum of its subtree's cell
        areas. A hole never wins: the component around it has at least its area and comes first."""
        U, dual, cuts, dual_cuts = self.U, self.tree, self.cuts, self.dual_cuts
        width = U.shape[1]
        has_holes = np.zeros(len(cuts), dtype=bool)
        has_holes[self.snap] = True
        outer = np.flatnonzero(has_holes[snap])
        o_nodes, o_snap = nodes[outer], snap[outer]
        grid = pad_even(U.astype(np.int16), tree.low)
        tree.set_first(grid, _raster_index(grid.shape, width))  # no-op if ties already set it
        dual.set_first(pad_even(self.attr, dual.low), _raster_index(dual.leaf_of_pixel.shape, width, frame=1))
        o_first = tree.first(o_nodes, cuts[o_snap])
        h_first = dual.first(self.nodes, dual_cuts[self.snap])
        no, nh = len(outer), len(self.nodes)
        # Look up contours by (cut, region): outer contours first, then holes.
        o_key = o_snap * len(tree.level) + o_nodes
        h_key = self.snap * len(dual.level) + self.nodes
        o_order, h_order = np.argsort(o_key), np.argsort(h_key)
        parent = np.full(no + nh, -1, dtype=np.int64)
        y, x = np.divmod(o_first, width)
        inside = y > 0
        above = dual.region_of(dual.leaf_of_pixel[y[inside], x[inside] + 1], dual_cuts[o_snap[inside]])
        enclosed = ~self.is_outside[above]
        rows = np.flatnonzero(inside)[enclosed]
        found = h_order[np.searchsorted(h_key, o_snap[rows] * len(dual.level) + above[enclosed], sorter=h_order)]
        parent[rows] = no + found
        y, x = np.divmod(h_first, width)
        around = tree.region_of(tree.leaf_of_pixel[y - 1, x], cuts[self.snap])
        parent[no:] = o_order[np.searchsorted(o_key, self.snap * len(tree.level) + around, sorter=o_order)]
        # Subtree areas, deepest contours first.
        total = np.concatenate([area[outer], self._areas()])
        depth = np.zeros(no + nh, dtype=np.int64)
        up = parent.copy()
        while (up >= 0).any():
            depth += up >= 0
            up = np.where(up >= 0, parent[np.maximum(up, 0)], -1)
        for level in range(int(depth.max()), 0, -1):
            at = np.flatnonzero(depth == level)
            np.add.at(total, parent[at], total[at])
        winner, tied, top = _winners(o_snap, total[:no], len(cuts))
        # Ties: OpenCV's depth-first order, later-found siblings first; a contour is found at its
        # first pixel (an inner one a pixel earlier, at the foreground pixel on its left).
        found_at = np.concatenate([o_first, h_first - 1])

        def path(k: int) -> list[int]:
            # Sort key of contour k in OpenCV's order: its ancestors' keys from the top, later first.
            keys = []
            while k >= 0:
                keys.append(-int(found_at[k]))
                k = int(parent[k])
            return keys[::-1]

        for s in np.flatnonzero(tied).tolist():
            winner[s] = min(np.flatnonzero(top & (o_snap == s)).tolist(), key=path)
        out = np.full(len(cuts), -1, dtype=np.int64)
        out[has_holes] = outer[winner[has_holes]]
        return out


# --------------------------------------------------------------------------- public helpers


def regions_at_thresholds(
    normalized: np.ndarray, thresholds: np.ndarray, benchmark: bool
) -> tuple[Regions, np.ndarray]:
    """Regions of one normalised map at ascending ``thresholds``, and the index into
    ``Regions.cuts`` of each threshold.

    Default mode: the foreground of ``tau`` is ``map >= tau`` on the float map. Benchmark mode: the
    WSOL benchmark's uint8 map and integer cuts (see :func:`benchmark_regions`)."""
    if benchmark:
        U = benchmark_uint8(normalized)
        cuts, cut_of = _benchmark_cut_table(thresholds.tobytes(), int(U.max()))
        return benchmark_regions(U, cuts), cut_of
    cuts = np.arange(len(thresholds))
    levels = threshold_levels(normalized, thresholds).astype(np.int16 if len(thresholds) < 2**15 else np.int32)
    return default_regions(levels, cuts, len(thresholds)), cuts


@lru_cache(maxsize=64)
def _benchmark_cut_table(thresholds: bytes, uint8_max: int) -> tuple[np.ndarray, np.ndarray]:
    # The distinct integer cuts of the thresholds and the cut of each; the uint8 maximum of a
    # normalised map is 255 (or 0 when flat), so this is computed once per threshold list.
    return np.unique(benchmark_cuts(np.frombuffer(thresholds), uint8_max), return_inverse=True)


class ThresholdBoxes(NamedTuple):
    """Boxes of one map at every threshold (inclusive pixel corners ``x0, y0, x1, y1``).

    ``largest[j]`` is the box of the largest region at ``thresholds[j]`` (valid where
    ``has_largest[j]``); ``boxes[offsets[j]:offsets[j + 1]]`` are the boxes of all its regions,
    sorted. In benchmark mode there is always a box: ``[0, 0, 0, 0]`` when no contour exists.
    """

    thresholds: np.ndarray
    largest: np.ndarray
    has_largest: np.ndarray
    boxes: np.ndarray
    offsets: np.ndarray

    def boxes_at(self, j: int) -> np.ndarray:
        """All region boxes at ``thresholds[j]``, shape (n, 4)."""
        return self.boxes[self.offsets[j] : self.offsets[j + 1]]


def threshold_boxes(score_map, thresholds=None, *, protocol: str = "benchmark") -> ThresholdBoxes:
    """Boxes of the regions of one map at every threshold, from a single component tree.

    Args:
        score_map: (H, W) map, numpy or torch; it is min-max normalised first (a constant map
            becomes all zeros). NaN or infinite values raise ValueError.
        thresholds: ascending values in [0, 1]; default ``np.arange(0, 1, 0.01)``.
        protocol: ``"benchmark"`` for the WSOL benchmark's OpenCV definitions, bit for bit (see
            :func:`benchmark_regions`); ``"float"`` for foreground ``map >= tau`` on the float map,
            8-connected regions, tight boxes, largest by pixel count, ties to the region met first
            in raster order. See :data:`~spgkit.localization.maps.PROTOCOLS`.
    """
    benchmark = check_protocol(protocol) == "benchmark"
    thresholds = check_thresholds(thresholds)
    normalized = normalize_maps(as_float_maps(_to_numpy(score_map), "score_map"))[0]
    regions, cut_of = regions_at_thresholds(normalized, thresholds, benchmark)
    winner = regions.largest[cut_of]
    has_largest = winner >= 0
    largest = np.zeros((len(thresholds), 4), dtype=np.int64)
    largest[has_largest] = regions.boxes[winner[has_largest]]
    order = np.lexsort((*regions.boxes.T[::-1], regions.box_cut))
    per_cut = np.bincount(regions.box_cut, minlength=len(regions.cuts))
    starts = np.concatenate([[0], np.cumsum(per_cut)])
    boxes = regions.boxes[order]
    pieces = [boxes[starts[c] : starts[c + 1]] for c in cut_of.tolist()]
    offsets = np.concatenate([[0], np.cumsum([len(piece) for piece in pieces])]).astype(np.int64)
    all_boxes = np.concatenate(pieces) if pieces else np.zeros((0, 4), dtype=np.int64)
    return ThresholdBoxes(thresholds, largest, has_largest, all_boxes, offsets)


def largest_region_box(score_map, threshold: float, *, protocol: str = "benchmark") -> tuple[int, int, int, int] | None:
    """Box ``(x0, y0, x1, y1)`` (inclusive pixels) of the largest region of ``score_map`` at
    ``threshold``, or None when no pixel reaches it (float protocol only; the benchmark then uses
    ``(0, 0, 0, 0)``). The map is min-max normalised first; see :func:`threshold_boxes`."""
    boxes = threshold_boxes(score_map, [threshold], protocol=protocol)
    return tuple(int(x) for x in boxes.largest[0]) if boxes.has_largest[0] else None


def threshold_grid(count: int) -> np.ndarray:
    """``count`` thresholds in [0, 1) as the WSOL benchmark lists them: ``np.arange(0, 1, 1 / count)``
    (its ``cam_curve_interval``: 0.01 to report, 0.001 in training). ``k / count`` would differ in
    the last bit for some ``k``, and so would the integer cut ``int(tau * 255)`` of a few."""
    if count < 1:
        raise ValueError(f"the number of thresholds must be at least 1, not {count}")
    return np.arange(0, 1, 1 / count)


def check_thresholds(thresholds) -> np.ndarray:
    """Validate thresholds: a non-empty ascending 1-D sequence in [0, 1]; None gives the WSOL
    benchmark's reporting default ``np.arange(0, 1, 0.01)``."""
    if thresholds is None:
        return threshold_grid(100)
    out = np.asarray(_to_numpy(thresholds), dtype=np.float64)
    if out.ndim != 1 or len(out) == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {out.shape}")
    if not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1:
        raise ValueError("thresholds must lie in [0, 1]")
    if np.any(np.diff(out) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    return out


def _to_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x

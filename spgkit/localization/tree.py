"""The merge tree of an integer image's upper level sets, built once for all thresholds.

Thresholding an image at ``c`` keeps the pixels whose level exceeds ``c``. As ``c`` falls, regions
appear at local maxima, grow and merge: a merge tree. Building it once gives the regions of every
threshold, with their extents and sizes, without labelling each thresholded image again; that is
what makes 1000 thresholds cost about as much as one. Built with vectorised numpy:

1. Pixels are grouped in 2x2 blocks. Any two pixels of a block are 8-neighbours, so the pixels of a
   block above a threshold are always connected: the block is a node alive while its best pixel is
   above the threshold (for 4-connectivity, blocks serve when no block ever splits diagonally).
   Neighbouring blocks are joined by an edge whose weight is the highest threshold at which some
   pair of adjacent pixels across them is still above it.
2. Every node points to the neighbour of largest (level, index) key among those joined to it at the
   node's own level; such a neighbour is connected to the node whenever the node exists. Pointer
   jumping gives trees that are connected at every threshold, so they are contracted into single
   nodes; repeating on the graph of trees removes what plateaus leave.
3. The few nodes left (about one per regional maximum) are merged by Kruskal's algorithm, strongest
   edge first, which gives the dendrogram.

A region's extent at threshold ``c`` comes from its column and row maxima ("profiles"): it spans the
columns whose maximum exceeds ``c``. Sizes come from histograms of events (pixels, cells) by level.
Both add up along the dendrogram with an element-wise max or a sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch


def bincount(values: np.ndarray, size: int) -> np.ndarray:
    """``np.bincount(values.ravel(), minlength=size)`` for non-negative values below ``size``.

    torch counts small integer dtypes directly; numpy first converts them to intp, which makes it
    two to three times slower on the uint8 arrays counted here."""
    flat = torch.from_numpy(np.ascontiguousarray(values).reshape(-1))
    return torch.bincount(flat, minlength=size).numpy()


def pad_even(P: np.ndarray, value: int) -> np.ndarray:
    """``P`` padded with ``value`` at the bottom/right to even sizes."""
    h, w = P.shape
    if h % 2 == 0 and w % 2 == 0:
        return P
    out = np.full((h + h % 2, w + w % 2), value, dtype=P.dtype)
    out[:h, :w] = P
    return out


# Edge families of a node grid as (slice of the first node, slice of its neighbour).
_EAST = ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))
_SOUTH = ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))
_SOUTH_EAST = ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None)))
_SOUTH_WEST = ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1)))


def _quads(P: np.ndarray):
    """Top-left, top-right, bottom-left and bottom-right pixels of the 2x2 blocks of ``P``."""
    return P[0::2, 0::2], P[0::2, 1::2], P[1::2, 0::2], P[1::2, 1::2]


def _block_maxima(P: np.ndarray) -> tuple[np.ndarray, ...]:
    """Maxima of the left and right pixel columns and of the upper and lower pixel rows of the 2x2
    blocks of ``P``."""
    a, b, c, d = _quads(P)
    return np.maximum(a, c), np.maximum(b, d), np.maximum(a, b), np.maximum(c, d)


def _node_graph(P: np.ndarray, conn: int, block: int, maxima=None):
    """Node levels and weighted edge families of the pixel grid ``P`` (even sized when block=2;
    ``maxima`` are its :func:`_block_maxima`, needed for 8-connected blocks).

    An edge's weight is the highest level at which its two nodes are still joined: the best
    ``min`` over the pixel pairs adjacent across them."""
    if block == 1:
        families = [(*_EAST, np.minimum(P[:, :-1], P[:, 1:])), (*_SOUTH, np.minimum(P[:-1], P[1:]))]
        if conn == 8:
            families.append((*_SOUTH_EAST, np.minimum(P[:-1, :-1], P[1:, 1:])))
            families.append((*_SOUTH_WEST, np.minimum(P[:-1, 1:], P[1:, :-1])))
        return P, families
    a, b, c, d = _quads(P)
    if conn == 8:
        col0, col1, row0, row1 = maxima
        lev = np.maximum(col0, col1)
        families = [
            (*_EAST, np.minimum(col1[:, :-1], col0[:, 1:])),
            (*_SOUTH, np.minimum(row1[:-1], row0[1:])),
            (*_SOUTH_EAST, np.minimum(d[:-1, :-1], a[1:, 1:])),
            (*_SOUTH_WEST, np.minimum(c[:-1, 1:], b[1:, :-1])),
        ]
    else:
        lev = np.maximum(np.maximum(a, b), np.maximum(c, d))
        # 4-adjacent blocks touch along two pixel pairs; diagonal blocks do not touch.
        families = [
            (*_EAST, np.maximum(np.minimum(b[:, :-1], a[:, 1:]), np.minimum(d[:, :-1], c[:, 1:]))),
            (*_SOUTH, np.maximum(np.minimum(c[:-1], a[1:]), np.minimum(d[:-1], b[1:]))),
        ]
    return lev, families


def _blocks_are_4_connected(P: np.ndarray) -> bool:
    """True when no 2x2 block ever holds exactly one diagonal pair above a threshold (4-connectivity
    would split it), so 2x2 blocks can be nodes of a 4-connected graph."""
    a, b, c, d = _quads(P)
    return not (np.any(np.minimum(a, d) > np.maximum(b, c)) or np.any(np.minimum(b, c) > np.maximum(a, d)))


def _jump(parent: np.ndarray) -> np.ndarray:
    """Roots of a forest given by parent pointers (pointer jumping)."""
    while True:
        grand = np.take(parent, parent)
        if np.array_equal(grand, parent):
            return parent
        parent = np.take(grand, grand)


def _index_dtype(count: int):
    # The smallest signed integer dtype that holds 0..count.
    return np.int16 if count < 2**15 else np.int32 if count < 2**31 else np.int64


@lru_cache(maxsize=32)
def grid_index(shape: tuple[int, int]) -> np.ndarray:
    """Row-major indices of a grid, read-only and cached."""
    index = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape)
    index.flags.writeable = False
    return index


def _contract_grid(lev: np.ndarray, families, bits: int):
    """First contraction round, on the node grid: every node points to the side neighbour of largest
    key among those joined to it at the node's own level (such a neighbour is connected to the node
    whenever the node exists), and pointer jumping gives the roots.

    Returns each node's root (flat) and the node keys ``(level - min level, index)`` packed in int64."""
    index = grid_index(lev.shape)
    low = int(lev.min())
    # int32 keys halve the memory traffic of the candidate search when they fit.
    dtype = np.int32 if (int(lev.max()) - low + 1) << bits < 2**31 - 1 else np.int64
    key1 = ((lev.astype(dtype) - low) << bits | index.astype(dtype)) + 1  # 0 means "no candidate"
    cand = np.zeros(lev.shape, dtype=dtype)
    # Side neighbours only: diagonal ones would halve few trees for twice the work here, and the
    # edge-list rounds that follow catch what this round leaves.
    for us, vs, w in families[:2]:
        # Weights never exceed the levels of their nodes, so "joined at u's level" is w == lev[u].
        np.maximum(cand[us], key1[vs] * (w == lev[us]), out=cand[us])
        np.maximum(cand[vs], key1[us] * (w == lev[vs]), out=cand[vs])
    parent = np.where(cand > key1, (cand - 1) & ((1 << bits) - 1), index).ravel().astype(np.int64)
    return _jump(parent), (key1.ravel() - 1).astype(np.int64)


def _contract_edges(nkey, nlev, u, v, w, bits):
    """Contraction rounds on an edge list until no node can join a neighbour at its own level.

    Returns the remaining nodes' levels, the remaining edges, and the new index of every input node."""
    mask = (1 << bits) - 1
    new_index = np.arange(len(nkey))
    while len(u):
        n = len(nkey)
        cand = np.full(n, -1, dtype=np.int64)
        m = w == nlev[u]
        np.maximum.at(cand, u[m], nkey[v[m]])
        m = w == nlev[v]
        np.maximum.at(cand, v[m], nkey[u[m]])
        has = cand > nkey
        if not has.any():
            break
        # Keys hold grid indices; translate the winners to compact indices through a lookup.
        lut = np.empty(mask + 1, dtype=np.int64)
        lut[nkey & mask] = np.arange(n)
        parent = np.arange(n)
        parent[has] = lut[cand[has] & mask]
        parent = _jump(parent)
        keep = np.flatnonzero(parent == np.arange(n))
        renum = np.empty(n, dtype=np.int64)
        renum[keep] = np.arange(len(keep))
        u, v = renum[parent[u]], renum[parent[v]]
        new_index = renum[parent[new_index]]
        cross = u != v
        u, v, w = u[cross], v[cross], w[cross]
        nkey, nlev = nkey[keep], nlev[keep]
    return nlev, u, v, w, new_index


@dataclass
class MergeTree:
    """Merge tree of the sets ``{P > c}`` of an integer image ``P``, for every ``c``.

    Node ``i`` is a connected region alive for ``merge_level[i] <= c < level[i]``. Nodes
    ``0..num_leaves-1`` are leaves (regional maxima), later ones merges of two earlier nodes
    (``children``). ``profile[i]`` holds the node's column maxima then its row maxima, taken over the
    attribute levels so that excluded pixels (at ``low``) never count; ``hist[i]`` is its event
    histogram (:meth:`set_events`). Coordinates are those of the (even-padded) grid.
    """

    level: np.ndarray
    merge_level: np.ndarray
    parent: np.ndarray
    children: list[tuple[int, int]]
    profile: np.ndarray
    leaf_of_block: np.ndarray
    block: int
    low: int
    width: int
    height: int
    hist: np.ndarray | None = None
    first_table: np.ndarray | None = None

    @property
    def num_leaves(self) -> int:
        """Number of leaves (every merge adds one node)."""
        return len(self.level) - len(self.children)

    @cached_property
    def leaf_of_pixel(self) -> np.ndarray:
        """Leaf whose tree holds each grid pixel (grid shape, the smallest fitting int dtype)."""
        if self.block == 1:
            return self.leaf_of_block
        # Small dtypes keep this array and what is computed from it small: fresh large temporaries
        # are a noticeable cost (page faults) at this speed.
        out = np.empty((self.height, self.width), dtype=_index_dtype(self.num_leaves))
        for dy in (0, 1):
            for dx in (0, 1):
                out[dy::2, dx::2] = self.leaf_of_block
        return out

    def leaf_histogram(self, leaves: np.ndarray | None, levels: np.ndarray, size: int) -> np.ndarray:
        """(leaves, size) histogram of events with levels in ``[0, size)`` attributed to leaves
        (``leaves`` may be ``None`` when there is a single leaf)."""
        nl = self.num_leaves
        if nl == 1:
            return bincount(levels, size)[None]
        dtype = _index_dtype(nl * size)
        return bincount(leaves.astype(dtype) * size + levels.astype(dtype), nl * size).reshape(nl, size)

    def set_events(self, leaf_hist: np.ndarray) -> None:
        """Set the event histogram: ``leaf_hist[leaf, v]`` events at level ``v``, each counting for
        the regions that hold its leaf at every cut below its level. Merges sum their children."""
        nl = self.num_leaves
        hist = np.zeros((len(self.level), leaf_hist.shape[1]), dtype=np.int64)
        hist[:nl] = leaf_hist
        for node, (first, second) in enumerate(self.children, start=nl):
            np.add(hist[first], hist[second], out=hist[node])
        self.hist = hist

    def alive(self, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(node, cut index) of every region alive at each of the ``cuts``."""
        live = (self.merge_level[:, None] <= cuts[None, :]) & (cuts[None, :] < self.level[:, None])
        return np.nonzero(live)

    def extents(self, nodes: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        """Tight inclusive boxes ``x0, y0, x1, y1`` of the regions ``nodes`` alive at ``cuts``."""
        w, h, m = self.width, self.height, len(self.profile)
        cols, rows = self.profile[:, :w], self.profile[:, w:]
        # The four profiles read from each end, as rows of one array (padding never counts).
        sides = np.full((4, m, max(w, h)), self.low, dtype=self.profile.dtype)
        sides[0, :, :w], sides[1, :, :h] = cols, rows
        sides[2, :, :w], sides[3, :, :h] = cols[:, ::-1], rows[:, ::-1]
        which = np.concatenate([nodes + k * m for k in range(4)])
        first = _first_above(sides.reshape(4 * m, -1), which, np.tile(cuts, 4), self.low).reshape(4, -1)
        return np.stack([first[0], first[1], w - 1 - first[2], h - 1 - first[3]], axis=1)

    def counts(self, nodes: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        """Number of events of the regions ``nodes`` at ``cuts`` (events with level above the cut)."""
        tail = np.zeros((len(self.hist), self.hist.shape[1] + 1), dtype=np.int64)
        tail[:, :-1] = np.cumsum(self.hist[:, ::-1], axis=1)[:, ::-1]  # tail[n, v]: events at levels >= v
        return tail[nodes, np.clip(cuts + 1, 0, self.hist.shape[1])]

    @cached_property
    def _lifting(self) -> list[np.ndarray]:
        # Binary lifting: _lifting[k][n] is the 2**k-th ancestor of n (top nodes are their own).
        up = np.where(self.parent >= 0, self.parent, np.arange(len(self.parent)))
        table = [up]
        while (1 << len(table)) < len(up):
            table.append(table[-1][table[-1]])
        return table

    def region_of(self, leaves: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        """The region alive at each cut that holds each leaf (the leaves must be alive there).

        Levels never increase towards the root, so the regions alive at a cut form a prefix of the
        path from a leaf; binary lifting finds its end."""
        node = np.asarray(leaves, dtype=np.int64)
        for up in reversed(self._lifting):
            step = up[node]
            node = np.where(self.level[step] > cuts, step, node)
        return node

    def set_first(self, levels: np.ndarray, index: np.ndarray) -> None:
        """Record, per node and level, the smallest ``index`` (grid-shaped, e.g. raster positions)
        over the node's pixels at or above that level; pixels at ``low`` are left out. Only the
        first call does the work."""
        if self.first_table is not None:
            return
        keep = levels.ravel() > self.low
        size = int(levels.max()) - self.low
        leaf_first = np.full(self.num_leaves * size, np.iinfo(np.int64).max, dtype=np.int64)
        slot = self.leaf_of_pixel.ravel()[keep].astype(np.int64) * size + (levels.ravel()[keep] - self.low - 1)
        np.minimum.at(leaf_first, slot, index.ravel()[keep].astype(np.int64))
        first = np.empty((len(self.level), size), dtype=np.int64)
        # At or above a level: a running minimum from the top level down.
        first[: self.num_leaves] = np.minimum.accumulate(leaf_first.reshape(-1, size)[:, ::-1], axis=1)[:, ::-1]
        for node, (a, b) in enumerate(self.children, start=self.num_leaves):
            np.minimum(first[a], first[b], out=first[node])
        self.first_table = first

    def first(self, nodes: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        """Smallest index (see :meth:`set_first`) of the regions ``nodes`` alive at ``cuts``."""
        return self.first_table[nodes, cuts - self.low]


def _first_above(rows: np.ndarray, nodes: np.ndarray, cuts: np.ndarray, low: int) -> np.ndarray:
    """Index of the first entry of ``rows[node]`` above the cut, for every (node, cut) pair."""
    prefix = np.maximum.accumulate(rows, axis=1).astype(np.int64) - low  # non-decreasing, >= 0
    stride = int(prefix.max()) + 2
    flat = (prefix + stride * np.arange(len(rows), dtype=np.int64)[:, None]).ravel()
    query = stride * nodes + np.minimum(cuts - low, stride - 1)
    return np.searchsorted(flat, query, side="right") - nodes * rows.shape[1]


@lru_cache(maxsize=32)
def _profile_offsets(hb: int, wb: int, gw: int) -> tuple[np.ndarray, ...]:
    # Profile column of each block's left/right pixel column and upper/lower pixel row.
    xs = np.broadcast_to(np.arange(wb) * 2, (hb, wb)).ravel()
    ys = np.broadcast_to(gw + np.arange(hb)[:, None] * 2, (hb, wb)).ravel()
    out = (xs, xs + 1, ys, ys + 1)
    for array in out:
        array.flags.writeable = False
    return out


def merge_tree(P: np.ndarray, conn: int, attr: np.ndarray | None = None, low: int = -1) -> MergeTree:
    """Build the :class:`MergeTree` of the integer image ``P`` (8- or 4-connectivity).

    ``attr`` (default ``P``, same shape and dtype) gives the levels used for profiles. ``low`` must
    be below every cut that will be asked; it pads odd sizes and marks pixels that never count."""
    P = pad_even(P, low)
    attr = P if attr is None else pad_even(attr, low)
    gh, gw = P.shape
    block = 2 if conn == 8 or _blocks_are_4_connected(P) else 1
    attr_maxima = _block_maxima(attr) if block == 2 else None
    maxima = None
    if block == 2 and conn == 8:
        maxima = attr_maxima if attr is P else _block_maxima(P)
    lev, families = _node_graph(P, conn, block, maxima)
    hb, wb = lev.shape
    bits = max(lev.size - 1, 1).bit_length()
    root, key = _contract_grid(lev, families, bits)

    # Edges between different trees, then contraction on the (much smaller) graph of trees.
    root2 = root.reshape(hb, wb)
    ends_u, ends_v, weights = [], [], []
    for us, vs, w in families:
        ru, rv = root2[us], root2[vs]
        cross = ru != rv
        ends_u.append(ru[cross])
        ends_v.append(rv[cross])
        weights.append(w[cross])
    roots = np.flatnonzero(root == grid_index(lev.shape).ravel())
    compact = np.empty(root.size, dtype=np.int64)
    compact[roots] = np.arange(len(roots))
    u, v = compact[np.concatenate(ends_u)], compact[np.concatenate(ends_v)]
    w = np.concatenate(weights).astype(np.int64)
    nlev = lev.ravel()[roots].astype(np.int64)
    nlev, u, v, w, new_index = _contract_edges(key[roots], nlev, u, v, w, bits)
    node_of = new_index[compact[root]]

    # Kruskal on what is left, strongest edge first: one dendrogram node per union.
    nleaf = len(nlev)
    a, b = np.minimum(u, v), np.maximum(u, v)
    order = np.lexsort((-w, b, a))
    a, b, w = a[order], b[order], w[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])  # keep the strongest edge of each pair
    order = np.argsort(-w[first], kind="stable")
    uf = list(range(nleaf))
    top = list(range(nleaf))
    levels = nlev.tolist()
    parent = [-1] * nleaf
    children: list[tuple[int, int]] = []
    for ea, eb, ew in zip(a[first][order].tolist(), b[first][order].tolist(), w[first][order].tolist(), strict=True):
        while uf[ea] != ea:
            ea = uf[ea]
        while uf[eb] != eb:
            eb = uf[eb]
        if ea == eb:
            continue
        new = len(levels)
        levels.append(ew)
        parent.append(-1)
        parent[top[ea]] = parent[top[eb]] = new
        children.append((top[ea], top[eb]))
        uf[eb] = ea
        top[ea] = new
    level = np.asarray(levels, dtype=np.int64)
    parent_arr = np.asarray(parent, dtype=np.int64)
    merge_level = np.where(parent_arr >= 0, level[parent_arr], np.iinfo(np.int64).min)

    # Profiles: leaves from their blocks' column/row maxima, merges by element-wise max. ufunc.at
    # is only fast when values and target share a dtype, so the profile keeps the image's dtype.
    profile = np.full((len(level), gw + gh), low, dtype=P.dtype)
    flat = profile.ravel()
    base = node_of * (gw + gh)
    if nleaf == 1:
        profile[0, :gw] = attr.max(axis=0)
        profile[0, gw:] = attr.max(axis=1)
    elif block == 2:
        for offset, value in zip(_profile_offsets(hb, wb, gw), attr_maxima, strict=True):
            np.maximum.at(flat, base + offset, value.ravel())
    else:
        np.maximum.at(flat, base + grid_index((gh, gw)).ravel() % gw, attr.ravel())
        np.maximum.at(flat, base + gw + grid_index((gh, gw)).ravel() // gw, attr.ravel())
    for node, (first_child, second_child) in enumerate(children, start=nleaf):
        np.maximum(profile[first_child], profile[second_child], out=profile[node])
    return MergeTree(level, merge_level, parent_arr, children, profile, node_of.reshape(hb, wb), block, low, gw, gh)

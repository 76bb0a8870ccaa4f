"""SynthWSOL: a procedural WSOL benchmark on which plain CAM fails the way it does on birds.

Every image holds one object on a cluttered background. The object is a large *body* (a
wobbly, outlined, striped blob) whose shape, size, colour and texture are drawn from one
distribution for all classes, plus a small *part* attached to its rim, like a bird's head.
Only the part's shape tells the classes apart. A classifier therefore needs only the part, and
its class activation map lights up the part; the ground truth box and mask cover the whole
object. Methods that spread attention over the whole object (SPG, ACoL) have a coherent,
clearly delimited body to spread over.

All random choices of an image are drawn from an RNG seeded by ``(seed, split, index)`` before
the label is looked at, so images are reproducible in any access order, and an image rendered
with another class differs only where the two parts differ (:meth:`SynthWSOL.generate`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from spgkit.boxes import mask_box
from spgkit.data.base import Transform, check_choice
from spgkit.data.sample import Sample, make_sample
from spgkit.data.synth_parts import PartScores

SPLITS = {"train": 0, "val": 1, "test": 2}
SHAPES = ("disc", "triangle", "cross", "ring", "square", "star", "crescent", "bar")
"""The part shape of each class, in label order; ``num_classes`` takes the first ones."""

# Body half-axes as fractions of the image size, and the amplitude of each of its two rim harmonics.
_BODY_AXES = (0.14, 0.24)
_WOBBLE = 0.06
# How far the part's centre sits outside the body rim, and the farthest any part shape reaches,
# both in part radii.
_PART_OUTSET = 0.3
_PART_REACH = 1.15
_MAX_STROKES = 14
# Saturation and value ranges of the colours of an image: background (2), body, part, strokes.
_MUTED, _VIVID, _STROKE = ((0.05, 0.45), (0.3, 0.75)), ((0.45, 0.9), (0.5, 0.95)), ((0.2, 0.8), (0.25, 0.95))
# Uniform draws per image: palette (3 per colour), background blotches (4 x 4 x 3) and angle,
# object (16), noise offset (2), and 6 per stroke.
_SCENE_DRAWS = 3 * 4 + 48 + 1 + 16 + 2
_STROKE_DRAWS = 3 + 6


class SynthSample(Sample):
    """A :class:`~spgkit.data.Sample` with the part's annotation added.

    Attributes:
        part_box: ``tv_tensors.BoundingBoxes`` (1, 4) around the part.
        part_mask: ``tv_tensors.Mask`` (H, W), uint8 {0, 1}, the part's pixels.
    """

    part_box: tv_tensors.BoundingBoxes
    part_mask: tv_tensors.Mask


class SynthWSOL(Dataset):
    """A procedural, in-memory WSOL benchmark: no files, deterministic by seed.

    Samples follow the :class:`~spgkit.data.Sample` contract (``boxes`` and ``mask`` cover the
    whole object, body and part; ``ignore`` is None) plus ``part_box`` and ``part_mask``
    (:class:`SynthSample`). Labels cycle through the classes (``index % num_classes``), so any
    prefix of a split is balanced.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``: independent streams of images.
        num_images: images in this split.
        image_size: side of the square images, in pixels (at least 32; at the default
            ``part_scale`` the object needs at least 40, smaller parts fit 32).
        num_classes: number of classes, at most ``len(SHAPES)`` (8).
        part_scale: part diameter as a fraction of the body's mean diameter (at most about 0.55,
            so that the object fits the image). The part box covers a small fraction of the
            object box (IoU about 0.15 at the default), so a part-only map misses the object.
        clutter: background clutter in [0, 1]: number of distractor strokes, colour blotches and
            pixel noise.
        colour_cue: give each class's part a hue of its own (class ``k``: hue ``k / num_classes``
            give or take 0.03) besides its shape. Networks trained from scratch pick up colour
            in a few hundred steps and shape in thousands, so short CPU runs need the cue to learn
            anything. The part stays the only class evidence: body, background and clutter hues
            are drawn as without the cue.
        body_cue: weaker class evidence in the body, as on birds, whose wings and body tell
            species apart too, only less clearly than the head: a fine grating over the body at
            an orientation of the class's own (class ``k``: ``k / num_classes`` of a half turn),
            of contrast ``0.25 * body_cue`` against the body's own stripes (contrast 0.2 to 0.35,
            any orientation). 0 (the default) leaves the body class-agnostic, pixel for pixel;
            erasing methods (ACoL, HaS) have something to find only when it is above 0. In [0, 1].
        seed: base seed; the same arguments give the same bytes.
        transform: callable applied to each sample dict.

    Attributes:
        num_classes: number of classes.
        class_names: the part shape of each class, e.g. ``["disc", "triangle", "cross", "ring"]``.
        diagnostics: :class:`~spgkit.data.synth_parts.PartScores`, where maps sit against the
            part (:mod:`spgkit.data.diagnostics`).
    """

    diagnostics = PartScores

    def __init__(
        self,
        split: str = "train",
        num_images: int = 2000,
        image_size: int = 64,
        num_classes: int = 4,
        part_scale: float = 0.5,
        clutter: float = 0.5,
        colour_cue: bool = False,
        body_cue: float = 0.0,
        seed: int = 0,
        transform: Transform = None,
    ) -> None:
        _check_arguments(split, num_images, image_size, num_classes, part_scale, clutter, body_cue, seed)
        self.split = split
        self.num_images = num_images
        self.image_size = image_size
        self.num_classes = num_classes
        self.class_names = list(SHAPES[:num_classes])
        self.part_scale = part_scale
        self.clutter = clutter
        self.colour_cue = colour_cue
        self.body_cue = body_cue
        self.seed = seed
        self.transform = transform
        self._strokes = round(clutter * _MAX_STROKES)
        self._draw_count = _SCENE_DRAWS + _STROKE_DRAWS * self._strokes
        self._outline = max(1, round(image_size / 80))  # outline width in pixels: 1 at 64, 3 at 224
        roles = [_MUTED, _MUTED, _VIVID, _VIVID] + [_STROKE] * self._strokes
        self._saturation_range = np.array([role[0] for role in roles], dtype=np.float32).T
        self._value_range = np.array([role[1] for role in roles], dtype=np.float32).T
        centres = np.arange(image_size, dtype=np.float32) + 0.5
        self._ys, self._xs = np.meshgrid(centres, centres, indexing="ij")
        self._upsample = _upsample_weights(centres, image_size)
        self._nodes = np.linspace(0, image_size, 4, dtype=np.float32)
        # Pixel noise: each image reads a window of this bank at a random offset (drawing fresh
        # Gaussian noise per image would be the slowest step of generation).
        noise = np.random.default_rng([seed, len(SPLITS)]).standard_normal(
            (2 * image_size, 2 * image_size, 3)
        )
        self._noise = ((0.02 + 0.03 * clutter) * noise).astype(np.float32)

    def __len__(self) -> int:
        return self.num_images

    @property
    def labels(self) -> list[int]:
        """Every image's class, as :meth:`generate` draws it (classes in turn)."""
        return [index % self.num_classes for index in range(self.num_images)]

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        sample = self.generate(index)
        return self.transform(sample) if self.transform is not None else sample

    def generate(self, index: int, label: int | None = None) -> SynthSample:
        """Render image ``index`` (no transform), optionally with the part of class ``label``.

        Every random draw is independent of the label, so ``generate(i, j)`` is image ``i`` with
        only its part's shape (and, with ``colour_cue``, its hue) swapped for class ``j``: all pixels
        outside both parts agree.
        """
        label = index % self.num_classes if label is None else label
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} outside [0, {self.num_classes})")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        draw = _Draws(rng.random(self._draw_count))
        size = self.image_size
        colours = self._palette(draw, label)
        image = self._background(draw, colours[0], colours[1])
        if self._strokes:
            self._draw_strokes(draw, image, colours[4:])
        body, part = self._draw_object(draw, image, colours[2], colours[3], label)
        oy, ox = int(draw.uniform(0, size)), int(draw.uniform(0, size))
        image += self._noise[oy : oy + size, ox : ox + size]
        np.clip(image, 0.0, 1.0, out=image)
        image *= 255
        image += 0.5
        whole = body | part
        sample = make_sample(
            image.astype(np.uint8),
            label,
            mask_box(whole),
            whole,
            None,
            f"synthwsol/{self.split}/{index}",
        )
        part_box = torch.from_numpy(mask_box(part))
        return SynthSample(
            **sample,
            part_box=tv_tensors.BoundingBoxes(part_box, format="XYXY", canvas_size=(size, size)),
            part_mask=tv_tensors.Mask(torch.from_numpy(part.view(np.uint8))),
        )

    def _palette(self, draw: _Draws, label: int) -> np.ndarray:
        """Every colour of one image, (4 + strokes, 3) float32: background start and end, body,
        part, then one per stroke (one HSV conversion for all)."""
        hue, saturation, value = draw.block(len(self._saturation_range[0]), 3)
        if self.colour_cue:
            hue[3] = label / self.num_classes + 0.06 * (hue[3] - 0.5)
        else:
            # The part's hue is at least a quarter turn from the body's: visible against it, while
            # its colour follows the body's distribution and says nothing about the class.
            hue[3] = hue[2] + 0.25 + 0.5 * hue[3]
        (s_low, s_high), (v_low, v_high) = self._saturation_range, self._value_range
        return _hsv_to_rgb(hue, s_low + (s_high - s_low) * saturation, v_low + (v_high - v_low) * value)

    def _background(self, draw: _Draws, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """A gradient from ``start`` to ``end`` with low-frequency colour blotches, (H, W, 3) float32."""
        angle = draw.uniform(0, 2 * math.pi)
        # The gradient is linear, so bilinear upsampling of its values at the grid nodes is exact.
        ramp = (self._nodes[None, :] * math.cos(angle) + self._nodes[:, None] * math.sin(angle)) / (
            self.image_size * 1.42
        ) + 0.5
        grid = start + (end - start) * ramp[..., None]
        grid += (draw.block(16, 3).T.reshape(4, 4, 3) - 0.5) * (0.12 + 0.2 * self.clutter)
        rows = (self._upsample @ grid.reshape(4, 12)).reshape(-1, 4, 3)  # (H, 4, 3): upsampled along y
        return np.matmul(self._upsample, rows)  # (H, W, 3): and along x

    def _draw_strokes(self, draw: _Draws, image: np.ndarray, colours: np.ndarray) -> None:
        """Blend the distractors (thin, elongated, translucent ellipses) into ``image``; where
        strokes overlap, the last one drawn shows."""
        size, count = self.image_size, self._strokes
        length, aspect, cx, cy, angle, alpha = draw.block(count, 6)
        length = (0.06 + 0.16 * length) * size
        width = length * (0.12 + 0.23 * aspect)
        angle = angle * math.pi
        alpha = 0.35 + 0.35 * alpha
        # Each stroke's frame: rows map pixel coordinates (x, y, 1) to (u / length, v / width).
        cos, sin = np.cos(angle), np.sin(angle)
        cx, cy = cx * size, cy * size
        frames = np.empty((2 * count, 3), dtype=np.float32)
        frames[0::2] = np.stack([cos, sin, -(cx * cos + cy * sin)], axis=1) / length[:, None]
        frames[1::2] = np.stack([-sin, cos, cx * sin - cy * cos], axis=1) / width[:, None]
        # Written out rather than as a matrix product: BLAS is slow for an inner dimension of 3.
        xs, ys = self._xs.reshape(1, -1), self._ys.reshape(1, -1)
        local = frames[:, :1] * xs + frames[:, 1:2] * ys + frames[:, 2:]
        local *= local
        inside = local[0::2] + local[1::2] <= 1
        # 1 + index of the last stroke covering each pixel, 0 where none does.
        top = (inside * np.arange(1, count + 1, dtype=np.uint8)[:, None]).max(axis=0)
        hit = np.flatnonzero(top)
        top = top[hit] - 1
        flat = image.reshape(-1, 3)
        flat[hit] += alpha[top, None] * (colours[top] - flat[hit])

    def _draw_object(
        self, draw: _Draws, image: np.ndarray, body_colour: np.ndarray, part_colour: np.ndarray, label: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw body and part into ``image``; return their full-size masks."""
        size = self.image_size
        # Every draw happens before ``label`` is used, so the scene does not depend on the label.
        a, b = draw.uniform(*_BODY_AXES) * size, draw.uniform(*_BODY_AXES) * size
        angle = draw.uniform(0, math.pi)
        wobble2, wobble3 = draw.uniform(0, _WOBBLE), draw.uniform(0, _WOBBLE)
        phase2, phase3 = draw.uniform(0, 2 * math.pi), draw.uniform(0, 2 * math.pi)
        stripe_angle, stripe_phase = draw.uniform(0, math.pi), draw.uniform(0, 2 * math.pi)
        stripe_period = draw.uniform(0.09, 0.16) * size
        stripe_depth = draw.uniform(0.2, 0.35)
        rim_angle = draw.uniform(0, 2 * math.pi)
        part_radius = self.part_scale * (a + b) / 2 * draw.uniform(0.9, 1.1)
        part_angle = draw.uniform(0, 2 * math.pi)
        position_x, position_y = draw.uniform(0, 1), draw.uniform(0, 1)

        # Part centre relative to the body centre: on the rim at rim_angle, pushed outward.
        rim = 1 + wobble2 * math.cos(2 * rim_angle + phase2) + wobble3 * math.cos(3 * rim_angle + phase3)
        dx, dy = _rotate(a * rim * math.cos(rim_angle), b * rim * math.sin(rim_angle), angle)
        distance = math.hypot(dx, dy)
        stretch = 1 + _PART_OUTSET * part_radius / distance
        dx, dy = dx * stretch, dy * stretch
        body_reach = max(a, b) * (1 + wobble2 + wobble3)
        reach = max(body_reach, distance * stretch + _PART_REACH * part_radius) + 1
        cx, cy = reach + position_x * (size - 2 * reach), reach + position_y * (size - 2 * reach)

        window, u, v = self._local(cx, cy, body_reach + 1, angle)
        u /= a
        v /= b
        theta = np.arctan2(v, u)
        rim = 1 + wobble2 * np.cos(2 * theta + phase2) + wobble3 * np.cos(3 * theta + phase3)
        inside = u * u + v * v <= rim * rim
        phase = (self._xs[window] * math.cos(stripe_angle) + self._ys[window] * math.sin(stripe_angle)) * (
            2 * math.pi / stripe_period
        )
        brightness = (1 + stripe_depth * np.sin(phase + stripe_phase)) * (1 + 0.15 * u)
        if self.body_cue:
            brightness *= 1 + 0.25 * self.body_cue * self._grating(window, label, stripe_phase)
        body = self._fill(image, window, inside, body_colour * brightness[..., None])

        window, u, v = self._local(cx + dx, cy + dy, _PART_REACH * part_radius + 2, part_angle)
        inside = _shape(SHAPES[label], u / part_radius, v / part_radius)
        return body, self._fill(image, window, inside, part_colour)

    def _fill(
        self, image: np.ndarray, window: tuple[slice, slice], inside: np.ndarray, colour: np.ndarray
    ) -> np.ndarray:
        """Paint the pixels ``inside`` of ``window`` (:func:`_paint`) and return them as a full-size mask."""
        _paint(image[window], inside, colour, self._outline)
        mask = np.zeros((self.image_size, self.image_size), dtype=bool)
        mask[window] = inside
        return mask

    def _grating(self, window: tuple[slice, slice], label: int, phase: float) -> np.ndarray:
        """The body cue's pattern in ``window``: a sinusoid of period 7 % of the image side at the
        class's orientation, in [-1, 1]."""
        angle = math.pi * label / self.num_classes
        along = self._xs[window] * math.cos(angle) + self._ys[window] * math.sin(angle)
        return np.sin(along * (2 * math.pi / (0.07 * self.image_size)) + phase)

    def _local(
        self, cx: float, cy: float, radius: float, angle: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """The image window within ``radius`` of ``(cx, cy)``, and its pixel centres in a frame
        centred there and rotated by ``angle``."""
        size = self.image_size
        window = (
            slice(max(int(cy - radius), 0), min(int(cy + radius) + 2, size)),
            slice(max(int(cx - radius), 0), min(int(cx + radius) + 2, size)),
        )
        dx, dy = self._xs[window] - cx, self._ys[window] - cy
        cos, sin = math.cos(angle), math.sin(angle)
        return window, dx * cos + dy * sin, dy * cos - dx * sin


def _check_arguments(
    split: str,
    num_images: int,
    image_size: int,
    num_classes: int,
    part_scale: float,
    clutter: float,
    body_cue: float,
    seed: int,
) -> None:
    """Raise ``ValueError`` naming the first of :class:`SynthWSOL`'s arguments out of its range."""
    check_choice("split", split, SPLITS)
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPES)}, not {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, not {image_size}")
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must be in [0, 1], not {clutter}")
    if not 0.0 <= body_cue <= 1.0:
        raise ValueError(f"body_cue must be in [0, 1], not {body_cue}")
    if num_images < 1:
        raise ValueError(f"num_images must be positive, not {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, not {seed}")
    # The worst-case object (largest body, widest wobble, largest part) must fit in the image.
    largest_part = part_scale * _BODY_AXES[1] * 1.1
    reach = _BODY_AXES[1] * (1 + 2 * _WOBBLE) + (_PART_OUTSET + _PART_REACH) * largest_part
    if part_scale < 0.1 or reach > 0.5 - 1.5 / image_size:
        raise ValueError(f"part_scale {part_scale} is outside the range where the object fits the image")


def _upsample_weights(centres: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear weights (image_size, 4) that upsample a 4x4 grid (nodes at 0, 1/3, 2/3, 1 of the
    side) to the pixel ``centres``."""
    grid = centres / image_size * 3
    lower = np.minimum(grid.astype(int), 2)
    weights = np.zeros((image_size, 4), dtype=np.float32)
    weights[np.arange(image_size), lower] = 1 - (grid - lower)
    weights[np.arange(image_size), lower + 1] = grid - lower
    return weights


class _Draws:
    """Uniform scalars read one by one from a block drawn at once (one RNG call per image)."""

    def __init__(self, block: np.ndarray) -> None:
        self._array = block
        self._values = block.tolist()  # Python floats: scalar arithmetic on them is fast
        self._next = 0

    def uniform(self, low: float, high: float) -> float:
        """The next draw, scaled to [low, high)."""
        value = self._values[self._next]
        self._next += 1
        return low + (high - low) * value

    def block(self, rows: int, columns: int) -> np.ndarray:
        """The next ``rows * columns`` draws in [0, 1), as ``columns`` arrays of ``rows`` values."""
        values = self._array[self._next : self._next + rows * columns].reshape(rows, columns)
        self._next += rows * columns
        return values.T


def _paint(patch: np.ndarray, inside: np.ndarray, colour: np.ndarray, outline: int) -> None:
    """Fill ``inside`` with ``colour`` (one colour or one per pixel) and darken an outline
    ``outline`` pixels wide along its edge."""
    core = inside.copy()
    for _ in range(outline):
        shrunk = core.copy()
        shrunk[1:, :] &= core[:-1, :]
        shrunk[:-1, :] &= core[1:, :]
        shrunk[:, 1:] &= core[:, :-1]
        shrunk[:, :-1] &= core[:, 1:]
        core = shrunk
    np.copyto(patch, colour, where=inside[..., None])
    np.copyto(patch, 0.35 * colour, where=(inside & ~core)[..., None])


def _shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside a part shape of unit radius, given pixel coordinates in part radii."""
    radius2 = u * u + v * v
    if shape == "disc":
        return radius2 <= 1
    if shape == "ring":
        return (radius2 <= 1) & (radius2 >= 0.45**2)
    if shape == "triangle":
        # Equilateral, circumradius 1.15: inside all three edges at distance 0.575 from the centre.
        inside = np.ones(u.shape, dtype=bool)
        for k in range(3):
            angle = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.575
        return inside
    if shape == "cross":
        return ((np.abs(u) <= 0.34) & (np.abs(v) <= 1.05)) | ((np.abs(v) <= 0.34) & (np.abs(u) <= 1.05))
    if shape == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if shape == "star":
        theta = np.arctan2(v, u)
        return np.sqrt(radius2) <= 0.55 + 0.5 * np.cos(5 * theta)
    if shape == "crescent":
        return (radius2 <= 1) & ((u - 0.5) ** 2 + v * v >= 0.75**2)
    if shape == "bar":
        return (np.abs(u) <= 1.05) & (np.abs(v) <= 0.36)
    raise ValueError(f"unknown shape {shape!r}")


def _rotate(u: float, v: float, angle: float) -> tuple[float, float]:
    """Take a point from the rotated frame of :meth:`SynthWSOL._local` back to image axes."""
    cos, sin = math.cos(angle), math.sin(angle)
    return u * cos - v * sin, u * sin + v * cos


def _hsv_to_rgb(hue: Any, saturation: Any, value: Any) -> np.ndarray:
    """RGB colours, float32 (..., 3), from hue, saturation and value in [0, 1] (scalars or arrays)."""
    hue, saturation, value = (np.asarray(x, dtype=np.float32)[..., None] for x in (hue, saturation, value))
    sector = (np.array([5, 3, 1], dtype=np.float32) + (hue % 1.0) * 6) % 6
    return value * (1 - saturation * np.clip(np.minimum(sector, 4 - sector), 0, 1))

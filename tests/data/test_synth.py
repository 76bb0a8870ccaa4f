"""SynthWSOL: determinism, annotation geometry, and that the part alone decides the class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from spgkit.data import SynthWSOL, eval_transform
from spgkit.data.synth import SHAPES


def box_iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_same_seed_same_bytes_in_any_access_order():
    first, second = SynthWSOL(num_images=6, seed=3), SynthWSOL(num_images=6, seed=3)
    forward = [first[i] for i in range(6)]
    backward = [second[i] for i in reversed(range(6))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["part_mask"], b["part_mask"])


def test_seeds_and_splits_give_different_images():
    images = {
        (seed, split): SynthWSOL(split, num_images=1, seed=seed)[0]["image"]
        for seed in (0, 1)
        for split in ("train", "val", "test")
    }
    keys = list(images)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            # Most pixels differ between any two streams, not just a few.
            assert (images[a] != images[b]).float().mean() > 0.5, (a, b)


def test_sample_contract_and_geometry(extent):
    dataset = SynthWSOL("val", num_images=40, image_size=64, num_classes=4)
    ious = []
    for index in range(len(dataset)):
        sample = dataset[index]
        assert isinstance(sample["image"], tv_tensors.Image) and sample["image"].dtype == torch.uint8
        assert tuple(sample["image"].shape) == (3, 64, 64)
        assert sample["label"] == index % 4 and sample["ignore"] is None
        assert sample["image_id"] == f"synthwsol/val/{index}"
        mask, part = sample["mask"].bool(), sample["part_mask"].bool()
        assert (part <= mask).all() and part.sum() > 20  # the part is a visible piece of the object
        assert sample["boxes"].tolist() == [extent(mask)]
        assert sample["part_box"].tolist() == [extent(part)]
        box = sample["boxes"][0].tolist()
        assert 0 <= box[0] and 0 <= box[1] and box[2] <= 64 and box[3] <= 64
        ious.append(box_iou(sample["part_box"][0].tolist(), box))
    # A map that finds only the part fails IoU >= 0.5 against the object box, every time.
    assert max(ious) < 0.4 and 0.05 < np.mean(ious) < 0.3


@pytest.mark.parametrize("colour_cue", [False, True])
def test_part_alone_decides_the_class(colour_cue):
    # Rendering an image with another class's part changes only pixels within the two parts:
    # body, background and clutter are bit-identical across classes, so the body's statistics
    # cannot carry the class, and the parts of different classes do differ.
    dataset = SynthWSOL("train", num_images=20, num_classes=len(SHAPES), colour_cue=colour_cue)
    for index in range(0, 20, 3):
        renders = [dataset.generate(index, label) for label in range(len(SHAPES))]
        for label, render in enumerate(renders):
            assert render["label"] == label
        base = renders[0]
        for other in renders[1:]:
            parts = base["part_mask"].bool() | other["part_mask"].bool()
            differs = (base["image"] != other["image"]).any(dim=0)
            assert not (differs & ~parts).any()
            assert not torch.equal(base["part_mask"], other["part_mask"])
            assert differs.sum() > 10


def test_colour_cue_gives_each_class_its_part_hue():
    import colorsys

    def part_hue(sample) -> float:
        mask = sample["part_mask"].bool()
        rgb = sample["image"][:, mask].float().median(dim=1).values / 255  # the fill, not the outline
        return colorsys.rgb_to_hsv(*rgb.tolist())[0]

    def hue_gap(a: float, b: float) -> float:
        return min(abs(a - b), 1 - abs(a - b))

    cued = SynthWSOL("train", num_images=40, num_classes=4, clutter=0.0, colour_cue=True)
    plain = SynthWSOL("train", num_images=40, num_classes=4, clutter=0.0)
    cued_gaps = [hue_gap(part_hue(cued[i]), (i % 4) / 4) for i in range(40)]
    plain_gaps = [hue_gap(part_hue(plain[i]), (i % 4) / 4) for i in range(40)]
    assert max(cued_gaps) < 0.07  # 0.03 of jitter, plus pixel noise and uint8 rounding
    assert np.mean(plain_gaps) > 0.15  # without the cue the hue says nothing about the class


def test_part_shapes_render_as_named():
    # Rotation-invariant checks on the part masks alone: only rings have a hole at their centroid,
    # and only discs fill the circle that encloses them.
    dataset = SynthWSOL("train", num_images=200, num_classes=4)
    assert dataset.class_names == ["disc", "triangle", "cross", "ring"]
    for index in range(200):
        sample = dataset[index]
        part = sample["part_mask"].numpy().astype(bool)
        ys, xs = np.nonzero(part)
        cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
        radius = np.sqrt(((ys + 0.5 - cy) ** 2 + (xs + 0.5 - cx) ** 2).max()) + 0.5
        fill = part.sum() / (np.pi * radius**2)
        name = dataset.class_names[sample["label"]]
        assert (not part[int(cy), int(cx)]) == (name == "ring"), index
        assert (fill > 0.75) == (name == "disc"), index


def test_label_override_and_bad_arguments():
    dataset = SynthWSOL(num_images=2)
    with pytest.raises(ValueError, match="label 4"):
        dataset.generate(0, 4)
    with pytest.raises(IndexError):
        dataset[2]
    with pytest.raises(ValueError, match="num_classes"):
        SynthWSOL(num_classes=len(SHAPES) + 1)
    with pytest.raises(ValueError, match="part_scale"):
        SynthWSOL(part_scale=0.9)
    with pytest.raises(ValueError, match="split"):
        SynthWSOL("dev")


def test_transform_keeps_part_annotation_aligned(extent):
    # Doubling the size is exact for boxes and for nearest-neighbour masks alike.
    dataset = SynthWSOL(num_images=4, image_size=64, transform=eval_transform(128))
    for index in range(4):
        sample = dataset[index]
        assert sample["image"].dtype == torch.float32 and tuple(sample["image"].shape) == (3, 128, 128)
        assert sample["part_box"][0].tolist() == extent(sample["part_mask"].bool())
        assert sample["boxes"][0].tolist() == extent(sample["mask"].bool())


@pytest.mark.parametrize("image_size", [64, 224])
def test_other_sizes_and_clutter_levels(image_size, extent):
    for clutter in (0.0, 1.0):
        sample = SynthWSOL(num_images=1, image_size=image_size, clutter=clutter)[0]
        assert tuple(sample["image"].shape) == (3, image_size, image_size)
        assert sample["boxes"].tolist() == [extent(sample["mask"].bool())]


def _body_only_features(dataset: SynthWSOL, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectra of the body's pixels alone (part, background and clutter zeroed), and the labels."""
    feats, labels = [], []
    for i in range(count):
        sample = dataset[i]
        body = sample["mask"].bool() & ~sample["part_mask"].bool()
        gray = sample["image"].float().mean(0) * body
        gray = gray - gray[body].mean() * body  # only the texture, not the body's brightness
        spectrum = torch.fft.rfft2(gray).abs()[:24, :13]  # the low frequencies, where the gratings are
        feats.append((spectrum / (spectrum.norm() + 1e-6)).flatten())
        labels.append(sample["label"])
    return torch.stack(feats), torch.tensor(labels)


def _linear_probe_accuracy(body_cue: float) -> float:
    """A linear classifier trained on body pixels only, scored on other images."""
    kw = dict(num_images=400, image_size=64, num_classes=4, body_cue=body_cue)
    x, y = _body_only_features(SynthWSOL("train", **kw), 400)
    xt, yt = _body_only_features(SynthWSOL("test", **kw), 200)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], 4)
    opt = torch.optim.Adam(probe.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(x), y).backward()
        opt.step()
    return (probe(xt).argmax(1) == yt).float().mean().item()


def test_body_cue_puts_weaker_class_evidence_in_the_body():
    # Strength 0 is today's dataset, byte for byte, and its body says nothing about the class.
    plain, zero = SynthWSOL("train", num_images=8), SynthWSOL("train", num_images=8, body_cue=0.0)
    assert all(torch.equal(plain[i]["image"], zero[i]["image"]) for i in range(8))
    assert _linear_probe_accuracy(0.0) < 0.4  # chance is 0.25 for 4 classes
    # With the cue the body alone tells the classes apart, and only the body and part change.
    assert _linear_probe_accuracy(0.5) > 0.6
    cued = SynthWSOL("train", num_images=8, body_cue=0.5)
    for i in range(8):
        changed = (cued[i]["image"] != plain[i]["image"]).any(0)
        body = cued[i]["mask"].bool() & ~cued[i]["part_mask"].bool()
        assert changed.any() and not (changed & ~cued[i]["mask"].bool()).any()
        assert changed[body].float().mean() > 0.3
    with pytest.raises(ValueError, match="body_cue must be in"):
        SynthWSOL(body_cue=1.5)

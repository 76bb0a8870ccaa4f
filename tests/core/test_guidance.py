import math

import torch

from spgkit.guidance import IGNORE, masked_bce, minmax_normalize, seed_mask


def test_seed_mask_hand_worked():
    scores = torch.tensor(
        [
            [
                [0.90, 0.80, 0.60],
                [0.50, 0.04, 0.20],
                [0.75, 0.03, 0.70],
            ]
        ]
    )
    # delta_h = 0.7: 0.9, 0.8, 0.75 pass (0.70 does not: strictly greater); delta_l = 0.05.
    got = seed_mask(scores, 0.7, 0.05, min_pixels=3)
    expected = torch.tensor([[[1, 1, 255], [255, 0, 255], [1, 0, 255]]], dtype=torch.uint8)
    assert torch.equal(got, expected)


def test_seed_mask_fallback_per_image():
    # Image 0 has only 2 pixels above 0.7 (fewer than min_pixels=3): it uses 0.7 * max = 0.56.
    # Image 1 has 3 and keeps delta_h = 0.7.
    scores = torch.tensor(
        [
            [[0.80, 0.75, 0.60], [0.50, 0.00, 0.57]],
            [[0.80, 0.75, 0.72], [0.60, 0.00, 0.57]],
        ]
    )
    got = seed_mask(scores, 0.7, 0.05, min_pixels=3)
    expected = torch.tensor(
        [
            [[1, 1, 1], [255, 0, 1]],
            [[1, 1, 1], [255, 0, 255]],
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(got, expected)


def test_seed_mask_carries_no_gradient():
    scores = torch.rand(2, 8, 8, requires_grad=True)
    mask = seed_mask(scores, 0.7, 0.05)
    assert not mask.requires_grad and mask.grad_fn is None and mask.dtype == torch.uint8


def test_masked_bce_equals_manual_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    mask = torch.tensor([[[1, 0], [IGNORE, 1]]], dtype=torch.uint8)

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    manual = (bce(2.0, 1) + bce(-1.0, 0) + bce(3.0, 1)) / 3
    assert abs(masked_bce(logits, mask).item() - manual) < 1e-6


def test_masked_bce_upsamples_logits_and_handles_all_ignored():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    mask = torch.full((1, 4, 4), IGNORE, dtype=torch.uint8)
    loss = masked_bce(logits, mask)
    assert loss.item() == 0.0
    mask[0, 0, 0] = 1
    assert abs(masked_bce(logits, mask).item() - math.log(2)) < 1e-6  # sigmoid(0) = 0.5


def test_minmax_normalize_per_image_and_flat():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]])
    out = minmax_normalize(maps)
    assert torch.allclose(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))


def test_masked_bce_leaves_ignored_pixels_out_even_when_infinite():
    # An ignored pixel whose logit overflowed: inf * 0 would be NaN; left out, the loss is the
    # valid pixel's alone, log(2) for a logit of 0.
    logits = torch.tensor([[[[0.0, float("inf")]]]])
    mask = torch.tensor([[[1, IGNORE]]], dtype=torch.uint8)
    assert abs(masked_bce(logits, mask).item() - math.log(2)) < 1e-6

"""Each point where spgkit once departed from the reference codes (the WSOL benchmark's
``wsol/inception.py``, ``wsol/method/spg.py``, ``wsol/method/acol.py``; the SPG and ACoL authors'
code), pinned with hand-worked values."""

import math

import pytest
import torch
from torch import nn

from spgkit.guidance import IGNORE, minmax_normalize, seed_mask
from spgkit.model import Classifier, HeadSpec, build_model
from spgkit.evaluate import predict_maps

SMALL = dict(classifier_width=32, backbone="inception_v3", backbone_args={"large_feature_map": True})


def test_seed_mask_background_wins_over_a_fallback_object():
    # Only 2 pixels exceed 0.7 (fewer than min_pixels), so delta_h falls back to 0.7 * 0.05 = 0.035,
    # below delta_l = 0.05: 0.04 is both "object" (> 0.035) and "background" (< 0.05). Both
    # references mark object first, then background, so background wins.
    scores = torch.tensor([[[0.05, 0.04, 0.03, 0.01]]])
    got = seed_mask(scores, 0.7, 0.05)
    assert got.tolist() == [[[1, 0, 0, 0]]]


def test_seed_of_a_flat_map_is_all_ignored():
    # The references divide by max - min unguarded; a flat CAM gives NaN scores, no object and no
    # background pixel. spgkit gives the same mask (and a zero loss where the references give NaN).
    flat = minmax_normalize(torch.full((1, 3, 3), 2.0), flat=float("nan"))
    assert torch.equal(seed_mask(flat, 0.7, 0.01), torch.full((1, 3, 3), IGNORE, dtype=torch.uint8))


def _spg_b_with_b2_logits(registry, logits):
    """An unshared SPG-B whose B2 output layer returns ``logits`` (N, 1, 4, 4) at 32x32 input."""
    model = build_model(3, [HeadSpec("spg_b", {"shared": False, "width": 8})], registry=registry, **SMALL)
    model.heads["spg_b"].b2_out.register_forward_hook(lambda module, args, out: logits)
    return model


def test_b1_seed_takes_the_sigmoid_after_upsampling(registry):
    # B2 logits: 4x4, left half -6, right half 2, at 32 px (stride 8). Bilinear upsampling
    # (align_corners=False) samples source column (x + 0.5) / 8 - 0.5; between source columns 1 and
    # 2 the logit is -6 + 8 * (src - 1): column 13 -> -4.5, 14 -> -3.5, 15 -> -2.5, 17 -> -0.5, 18 -> 0.5.
    # sigmoid(up(B2)), as both references compute it: column 13: 0.011 and 14: 0.029 are
    # background (< 0.05); 15 (0.076) to 17 (0.378) are ignored; 18 on (> 0.5) object (448 pixels
    # pass 0.5, no fallback). up(sigmoid(B2)) would give column 13 0.0025 + 0.1875 * 0.878 = 0.167:
    # ignored, not background.
    logits = torch.tensor([-6.0, -6.0, 2.0, 2.0]).repeat(1, 1, 4, 1)
    model = _spg_b_with_b2_logits(registry, logits)
    out = model(torch.randn(1, 3, 32, 32), torch.tensor([0]))
    seed = out.heads["spg_b"].visuals["seed b1"][0]
    expected_row = [0] * 15 + [IGNORE] * 3 + [1] * 14
    assert seed[0].tolist() == expected_row and bool((seed == seed[0]).all())
    assert out.heads["spg_b"].visuals["b2"][0, 0, 13].item() == pytest.approx(1 / (1 + math.exp(4.5)), rel=1e-5)


def test_b2_thresholds_presets_name_their_source(registry):
    def thresholds(**args):
        return build_model(3, [HeadSpec("spg_b", args)], registry=registry, **SMALL).heads["spg_b"].b2_thresholds

    assert thresholds() == (0.7, 0.01)  # the WSOL benchmark's default
    assert thresholds(b2_thresholds="spg_code") == (0.7, 0.05)
    assert thresholds(b2_thresholds=(0.6, 0.02)) == (0.6, 0.02)
    with pytest.raises(ValueError, match="unknown b2_thresholds preset 'spg'"):
        thresholds(b2_thresholds="spg")


def test_spg_c_has_one_3x3_conv_by_default(registry):
    heads = [HeadSpec("spg_b"), HeadSpec("spg_c")]
    c = build_model(3, heads, registry=registry, backbone="inception_v3").heads["spg_c"]
    kinds = [type(m).__name__ for m in c.modules() if isinstance(m, nn.Conv2d)]
    assert kinds == ["Conv2d", "Conv2d"]
    # 3x3 conv 1024 -> 512 and its bias, then 1x1 conv 512 -> 1 and its bias.
    assert sum(p.numel() for p in c.parameters()) == 1024 * 512 * 9 + 512 + 512 + 1
    deep = build_model(3, [HeadSpec("spg_b"), HeadSpec("spg_c", {"depth": 2})], registry=registry).heads["spg_c"]
    assert sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in c.parameters()) == 512 * 512 * 9 + 512


def _xavier_bound(conv: nn.Conv2d) -> float:
    receptive = conv.kernel_size[0] * conv.kernel_size[1]
    return math.sqrt(6 / (conv.in_channels * receptive + conv.out_channels * receptive))


def test_every_new_conv_starts_xavier_uniform_with_zero_bias(registry):
    torch.manual_seed(0)
    model = build_model(5, [HeadSpec("spg_b"), HeadSpec("spg_c"), HeadSpec("acol")], registry=registry)
    convs = [m for part in (model.classifier, *model.heads.values()) for m in part.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 + 4 + 2 + 3  # A3 x2 + A4; B1 and B2 first, shared second and output; C; ACoL B
    for conv in convs:
        bound = _xavier_bound(conv)
        assert conv.weight.abs().max() <= bound
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    # PyTorch's default (kaiming_uniform, a = sqrt(5)) stays within 1 / sqrt(fan_in), which for
    # A3's first conv (768 * 9 inputs, 1024 * 9 outputs) is 0.012; Xavier reaches 0.019.
    a3 = model.classifier.a3[1]
    assert a3.weight.abs().max() > 1.5 / math.sqrt(768 * 9)


def test_classifier_dropout_sits_where_the_benchmark_has_it():
    layers = [type(m).__name__ for m in Classifier(16, 3, width=8, dropout=0.5).a3]
    assert layers == ["Dropout", "Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU", "Dropout"]
    # The input dropout acts on the features before A3: in training, with p = 0.5, about half of
    # the first conv's input is zero and the rest doubled.
    cls = Classifier(16, 3, width=8, dropout=0.5).train()
    seen = {}
    cls.a3[1].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    torch.manual_seed(0)
    cls(torch.ones(1, 16, 10, 10))
    assert set(seen["x"].unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (seen["x"] == 0).float().mean().item() < 0.6


def test_acol_classifiers_have_no_dropout(registry):
    model = build_model(3, [HeadSpec("acol")], registry=registry, **SMALL)
    for classifier in (model.classifier, model.heads["acol"].classifier_b):
        assert not any(isinstance(m, nn.Dropout) for m in classifier.modules())
    assert any(isinstance(m, nn.Dropout) for m in build_model(3, [], registry=registry, **SMALL).classifier.modules())
    # An explicit dropout still wins.
    assert any(isinstance(m, nn.Dropout) for m in build_model(3, [HeadSpec("acol")], registry=registry, dropout=0.5, **SMALL).classifier.modules())


def test_acol_erases_the_ground_truth_class_at_evaluation(registry):
    torch.manual_seed(0)
    model = build_model(4, [HeadSpec("acol")], registry=registry, **SMALL).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        predicted = model(images).logits.argmax(1)
    truth = (predicted + 1) % 4  # a ground truth that is not the prediction
    seen = []
    model.heads["acol"].classifier_b.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    predict_maps(model, images, truth)
    with torch.no_grad():
        cams = model(images).classifier.cams
        features = model.backbone(images)["high"]
    keep = minmax_normalize(cams[torch.arange(2), truth]) < 0.7
    erased_pred = minmax_normalize(cams[torch.arange(2), predicted]) < 0.7
    assert not torch.equal(keep, erased_pred)  # the two choices differ here
    assert torch.equal(seen[0], features * keep[:, None])


def test_localization_map_is_the_raw_cam_without_a_fusing_head(registry):
    # The benchmark resizes the raw CAM and normalises after; only ACoL's fusion normalises first.
    model = build_model(3, [], registry=registry, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    labels = torch.tensor([2, 1])
    assert torch.equal(model.localization_maps(out, labels), out.classifier.cams[torch.arange(2), labels])


def test_seed_statistics_of_a_hand_built_batch(registry):
    # The B2 logits of the resolution test: B1's seed is background in columns 0-14, ignored in
    # 15-17 and object in 18-31 of every row, so its shares are 15/32, 3/32 and 14/32.
    logits = torch.tensor([-6.0, -6.0, 2.0, 2.0]).repeat(1, 1, 4, 1)
    model = _spg_b_with_b2_logits(registry, logits)
    out = model(torch.randn(1, 3, 32, 32), torch.tensor([0]))
    stats = model.stats(out)
    assert stats["spg_b.seed_b1_background"].item() == pytest.approx(15 / 32)
    assert stats["spg_b.seed_b1_ignored"].item() == pytest.approx(3 / 32)
    assert stats["spg_b.seed_b1_object"].item() == pytest.approx(14 / 32)
    assert stats["spg_b.seed_b1_score"].item() == pytest.approx(out.heads["spg_b"].visuals["b2"].mean().item())
    # B2's seed comes from the min-max normalised CAM: its score mean lies in (0, 1), its shares add up.
    shares = [stats[f"spg_b.seed_b2_{k}"].item() for k in ("object", "background", "ignored")]
    assert sum(shares) == pytest.approx(1.0) and 0 < stats["spg_b.seed_b2_score"].item() < 1

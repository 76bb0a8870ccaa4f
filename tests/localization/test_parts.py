"""Part-versus-object diagnostics on hand-built maps and masks."""

import numpy as np
import pytest
import torch

from spgkit.data import SynthWSOL, eval_transform
from spgkit.data.synth_parts import PartScores
from spgkit.evaluate import evaluate
from spgkit.localization import LocalizationEvaluator
from spgkit.model import build_model


def _scene():
    # A 10 x 10 image: the object covers rows and columns 2..7 (36 pixels), its part rows and
    # columns 2..3 (4 pixels).
    whole = np.zeros((1, 10, 10), bool)
    whole[0, 2:8, 2:8] = True
    part = np.zeros((1, 10, 10), bool)
    part[0, 2:4, 2:4] = True
    return whole, part


def _batch(part, whole):
    """What SynthWSOL's diagnostics read of an evaluation batch of 10 x 10 images of the scene."""
    n = len(part)
    return {
        "images": torch.zeros(n, 3, 10, 10),
        "original_part_box": [np.array([[2.0, 2.0, 4.0, 4.0]])] * n,  # the part, exclusive corners
        "original_size": [(10, 10)] * n,
        "part_mask": torch.from_numpy(part),
        "masks": torch.from_numpy(whole),
    }


def _scored(maps, part, whole, protocol, cam_threshold=0.5):
    scores = PartScores(np.array([0.5]), cam_threshold, protocol)
    scores.update(_batch(part, whole), maps)
    return scores


@pytest.mark.parametrize("protocol", ["float", "benchmark"])
def test_a_map_on_the_part_and_a_map_on_the_object(protocol):
    whole, part = _scene()
    # Against the part's box, the map on the part scores as in the test below: 100 (float), 100 / 3
    # (benchmark, whose box is a pixel wider); the map on the object misses the part box (IoU 4 /
    # 36 or 4 / 49) at every level.
    on_part_box = {"float": 100.0, "benchmark": 100 / 3}[protocol]
    on_part = _scored(part.astype(np.float32), part, whole, protocol)
    # Everything the map keeps is on the part; it covers 4 of the object's 36 pixels.
    assert on_part.compute() == pytest.approx({"part_maxboxaccv2": on_part_box, "on_part": 100.0, "object_covered": 100 * 4 / 36})
    on_object = _scored(torch.from_numpy(whole.astype(np.float32)), part, whole, protocol)
    assert on_object.compute() == pytest.approx({"part_maxboxaccv2": 0.0, "on_part": 100 * 4 / 36, "object_covered": 100.0})
    both = _scored(np.concatenate([part, whole]).astype(np.float32), np.concatenate([part, part]), np.concatenate([whole, whole]), protocol)
    expected = {"part_maxboxaccv2": on_part_box / 2, "on_part": (100 + 100 * 4 / 36) / 2, "object_covered": (100 * 4 / 36 + 100) / 2}
    assert both.compute() == pytest.approx(expected)  # two images: the mean of the two
    # Under DDP the ranks' counts are summed: the two one-image scorings summed are the two-image one.
    merged = PartScores(np.array([0.5]), 0.5, protocol)
    merged.load_state_dict({k: v + on_object.state_dict()[k] for k, v in on_part.state_dict().items()})
    assert merged.compute() == pytest.approx(expected)
    empty = _scored(np.zeros((1, 10, 10), np.float32), part, whole, protocol)  # a flat map keeps nothing
    assert empty.compute() == {"part_maxboxaccv2": 0.0, "on_part": 0.0, "object_covered": 0.0}
    # Without a chosen CAM threshold, the part box's MaxBoxAccV2 alone; before any image, nothing.
    assert _scored(part.astype(np.float32), part, whole, protocol, None).compute() == pytest.approx({"part_maxboxaccv2": on_part_box})
    assert PartScores(np.array([0.5]), 0.5, protocol).compute() == {}


def test_part_box_accuracy_of_a_map_on_the_part():
    # Part box (2, 2, 3, 3), inclusive. The float protocol's box is the part's: IoU 1 at every IoU
    # level. The benchmark's box is one pixel wider, (2, 2, 4, 4): IoU 4 / 9 = 0.44, which passes
    # 30 % only, so its MaxBoxAccV2 is (100 + 0 + 0) / 3 -- tiny parts pay for that convention.
    whole, part = _scene()
    scores = {}
    for protocol in ("float", "benchmark"):
        ev = LocalizationEvaluator(thresholds=[0.5], protocol=protocol)
        ev.update(part.astype(np.float32), [np.array([[2, 2, 3, 3]])])
        scores[protocol] = ev.compute()["maxboxaccv2"]
    assert scores == pytest.approx({"float": 100.0, "benchmark": 100 / 3})


def test_evaluate_reports_part_scores_where_the_data_has_parts(registry):
    torch.manual_seed(0)
    model = build_model(4, [], registry=registry, classifier_width=16, backbone_args={"large_feature_map": True}).eval()
    data = SynthWSOL("test", num_images=8, image_size=48, transform=eval_transform(48, (0.5,) * 3, (0.5,) * 3))
    got = evaluate(model, data, torch.device("cpu"), batch_size=4, cam_threshold=0.5)
    assert {"part_maxboxaccv2", "on_part", "object_covered"} <= set(got)
    assert all(0 <= got[k] <= 100 for k in ("part_maxboxaccv2", "on_part", "object_covered"))
    # Random maps spread over the image: little of what they keep lies on the small part.
    assert got["on_part"] < 30

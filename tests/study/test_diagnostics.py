"""The diagnostics contract: a toy dataset's toy metric is counted, reduced, tabled, paired and
read by the generic layers, which know nothing of it; a broken one fails in one line."""

import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from spgkit.config import Arm, Data, Study
from spgkit.data import SynthWSOL, collate, eval_transform, make_sample
from spgkit.data.diagnostics import diagnostics_of, gt_boxes
from spgkit.evaluate import Scores
from spgkit.figures import ground_truth_boxes
from spgkit.hookspecs import hookimpl
from spgkit.io import write_json
from spgkit.plugins import Registry, get_plugin_manager
from spgkit.report import Collected, write_tables
from spgkit.runs import StudyFolder
from spgkit.score import score_maps_of


class PeakOnObject:
    """Toy diagnostics: the share of images whose map peaks inside the object's box (%)."""

    columns = {"peak_on_object": "Peak on object"}
    paired = ("peak_on_object",)
    figure_boxes: dict = {}

    def __init__(self, thresholds, cam_threshold, protocol):
        self.protocol, self.sums = protocol, np.zeros(2)  # peaks on the object, images

    def update(self, batch, maps):
        for heat, boxes in zip(torch.as_tensor(maps).numpy(), gt_boxes(batch, "original_boxes", self.protocol)):
            y, x = np.unravel_index(np.argmax(heat), heat.shape)
            x0, y0, x1, y1 = boxes[0]  # inclusive corners
            self.sums += (x0 <= x <= x1 and y0 <= y <= y1, 1)

    def compute(self):
        return {"peak_on_object": 100.0 * self.sums[0] / self.sums[1]} if self.sums[1] else {}

    def state_dict(self):
        return {"sums": self.sums.copy()}

    def load_state_dict(self, state):
        self.sums = np.asarray(state["sums"], dtype=np.float64)

    @classmethod
    def reading(cls, rows, differences, base):
        return [f"{base['arm']}'s map peaks on the object in {base['peak_on_object']:.1f} % of images."]


class Toy(Dataset):
    """Four 16 x 16 grey images, two classes; the object's box is (4, 4, 12, 12) in every one."""

    diagnostics = PeakOnObject

    def __init__(self, split="test", transform=None):
        self.transform, self.num_classes, self.class_names = transform, 2, ["a", "b"]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        sample = make_sample(np.full((16, 16, 3), 128, np.uint8), i % 2, np.array([[4, 4, 12, 12]]), None, None, f"toy/{i}")
        return self.transform(sample) if self.transform is not None else sample


def toy_map(image_id, size):
    """Images 0 and 1 peak at (8, 8), inside the object's box; 2 and 3 at (1, 1), outside."""
    heat = np.zeros(size, np.float32)
    at = 8 if int(image_id.split("/")[1]) < 2 else 1
    heat[at, at] = 1.0
    return heat


class Ranks:
    """Two DDP ranks that scored the same images: every count doubles."""

    world = 2

    def sum(self, array):
        return 2 * np.asarray(array)


class Plain(Toy):
    """The same images from a reader that offers no diagnostics."""

    diagnostics = None


def test_a_toy_dataset_s_metric_is_scored_and_reduced():
    transform = eval_transform(16, (0.5,) * 3, (0.5,) * 3)
    data = Subset(Toy(transform=transform), range(4))  # found under a wrapper
    assert diagnostics_of(data) is PeakOnObject and diagnostics_of(Toy) is PeakOnObject and diagnostics_of(Plain()) is None
    metrics = score_maps_of(data, toy_map, cam_threshold=0.5, thresholds=10)
    assert metrics["peak_on_object"] == 50.0  # 2 of 4 peaks inside
    assert list(metrics)[-1] == "peak_on_object"  # the dataset's metrics after the generic ones
    plain = score_maps_of(Plain(transform=transform), toy_map, cam_threshold=0.5, thresholds=10)
    assert plain == {k: v for k, v in metrics.items() if k != "peak_on_object"}
    # Under DDP the diagnostics' counts are summed with the evaluator's.
    scores = Scores(10, 0.5, diagnostics=PeakOnObject)
    (batch,) = DataLoader(data, batch_size=4, collate_fn=collate)
    scores.update(batch, torch.stack([torch.from_numpy(toy_map(i, (16, 16))) for i in batch["image_ids"]]))
    assert scores.compute(Ranks())["peak_on_object"] == 50.0 and scores.diagnostics.sums.tolist() == [4.0, 8.0]


def toy_registry():
    class Plugin:
        @hookimpl
        def spgkit_register_datasets(self, register):
            register(Toy, name="toy")

    pm = get_plugin_manager(autoload=False)
    pm.register(Plugin(), name="toy plugin")
    return Registry(pm)


def test_a_toy_dataset_s_metric_is_tabled_paired_and_read(tmp_path):
    study = Study(name="s", data=Data("toy"), arms=(Arm("cam"), Arm("x")), seeds=(0,))
    collected = Collected({arm: [{"seed": 0, "protocol": "benchmark", "maxboxaccv2": 30.0, "peak_on_object": peak}]
                           for arm, peak in (("cam", 50.0), ("x", 75.0))})  # fmt: skip
    text = write_tables(study, StudyFolder(tmp_path, study), collected, registry=toy_registry())
    assert "| Arm | Seeds | MaxBoxAccV2 | Peak on object |" in text and "| x | 1 | 30.0 | 75.0 |" in text
    assert "| Δ MaxBoxAccV2 | Δ Peak on object |" in text and "| x | 1 | +0.0 (0/1) | +25.0 (1/1) |" in text
    assert "- cam's map peaks on the object in 50.0 % of images." in text
    with open(tmp_path / "s" / "results.csv") as handle:
        assert [(r["arm"], r["peak_on_object"]) for r in csv.DictReader(handle)] == [("cam", "50.0"), ("x", "75.0")]
    with open(tmp_path / "s" / "differences.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["peak_on_object"], row["peak_on_object_ahead"]) == ("25.0", "1")
    # SynthWSOL's part columns are its own: the toy study's tables have none.
    assert "Part MaxBoxAccV2" not in text and "Object covered" not in text


def test_overlays_draw_the_boxes_a_dataset_names():
    assert ground_truth_boxes(Toy()) == {"boxes": "lime"}
    assert ground_truth_boxes(Subset(SynthWSOL("test", num_images=2), [0])) == {"boxes": "lime", "part_box": "yellow"}
    assert ground_truth_boxes(Dataset()) == {"boxes": "lime"}  # a reader without diagnostics


def test_diagnostics_missing_a_method_fail_in_one_line_naming_the_dataset():
    class Half:
        columns, paired, figure_boxes = {"x": "X"}, (), {}

        def update(self, batch, maps):
            pass

    class Broken(Toy):
        diagnostics = Half

    with pytest.raises(TypeError) as error:
        diagnostics_of(Subset(Broken(), [0]))
    message = str(error.value)
    assert message.startswith("dataset Broken: its diagnostics ") and "lack compute, state_dict, load_state_dict, reading" in message
    assert "\n" not in message
    with pytest.raises(TypeError, match="^dataset Broken: "):
        score_maps_of(Broken(transform=eval_transform(16, (0.5,) * 3, (0.5,) * 3)), toy_map)

"""The data of a study's runs: its splits opened through the registry, the selection split carved
out or drawn per class, the training images augmented by seed, and what runs record of them.

Every arm and seed of a study sees the same images: capped subsets and held-out selection images
are drawn by fixed permutations, and the random crop and flip of an image depend only on (seed,
epoch, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from spgkit.config import Arm, LocalData, Study
from spgkit.data import eval_transform, resolve_local
from spgkit.plugins import Registry
from spgkit.record import data_fingerprint, source_fingerprint, versions


def open_split(study: Study, split: str, transform, registry: Registry) -> Dataset:
    """One split of the study's dataset, its :class:`~spgkit.config.LocalData` arguments resolved
    to folders."""
    args = {k: resolve_local(v) if isinstance(v, LocalData) else v for k, v in study.data.args.items()}
    return registry.dataset(study.data.name)(split=split, transform=transform, **args)


def study_facts(study: Study, registry: Registry, arms: Sequence[Arm] | None = None) -> dict[str, Any]:
    """What every run of ``study`` (of its ``arms``, by default all) records beyond its
    declaration (:func:`~spgkit.runs.run_config`): the source fingerprint of the dataset reader,
    the backbone and every head, the fingerprint of each split it reads, and the library versions
    (:mod:`spgkit.record`)."""
    used = {f"dataset {study.data.name}": registry.dataset(study.data.name), f"backbone {study.backbone}": registry.backbone(study.backbone)}
    used |= {f"head {h.name}": registry.head(h.name) for arm in (study.arms if arms is None else arms) for h in arm.heads}
    roles = {"train": study.data.train_split, "select": study.data.select_split, "test": study.data.test_split}
    splits = {role: data_fingerprint(open_split(study, split, None, registry)) for role, split in roles.items() if split is not None}
    return {"sources": {key: source_fingerprint(obj) for key, obj in used.items()}, "splits": splits, "environment": versions()}


def cap(ds: Dataset, limit: int) -> Dataset:
    """At most ``limit`` images, drawn by a fixed permutation: splits are often sorted by class,
    so the first ``limit`` would leave most classes out."""
    if not 0 < limit < len(ds):
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit]
    return Subset(ds, sorted(order.tolist()))


class Transformed(Dataset):
    """``dataset`` with ``transform`` applied to every sample (the held-out selection images)."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transform(self.dataset[index])


class SeededAugmentation(Dataset):
    """Apply random training transforms seeded by (seed, epoch, index).

    An image gets the same crop and flip whatever the number of processes or loader workers, so
    a DDP run sees exactly the batches of the 1-process run, and a resumed run repeats its epoch.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        # Training reads the image and its label only; masks and boxes carried through the resize
        # and crop doubled the transform's cost. The random draws depend on the image alone.
        sample = self.dataset[index]
        sample = {"image": sample["image"], "label": sample["label"]}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((epoch_seed(self.seed, self.epoch) * 1_000_003 + index) % 2**62)
            return self.transform(sample)


def make_datasets(study: Study, registry: Registry, train: Dataset, mean, std) -> tuple[Dataset, Dataset, Dataset]:
    """Train (untransformed), selection and test (evaluation transform) sets, given the opened,
    untransformed training split.

    The selection set is ``select_per_class`` images of each class (:func:`per_class`) or
    ``max_eval`` images of ``select_split``; without a ``select_split`` it is carved out of the
    training split (``select_per_class`` of each class, or ``holdout`` images by a fixed
    permutation; the same for every arm and seed), and training uses the rest.
    """
    data = study.data
    eval_tf = eval_transform(data.image_size, mean, std, data.resize)
    if data.select_split is not None:
        select = open_split(study, data.select_split, eval_tf, registry)
        if data.select_per_class:
            select = Subset(select, per_class(select, data.select_per_class, data.select_split))
    else:
        if data.select_per_class:
            held = per_class(train, data.select_per_class, data.train_split)
        elif 0 < data.holdout < len(train):
            held = sorted(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: data.holdout].tolist())
        else:
            raise ValueError(f"study {study.name!r}: select_split is None, so data.holdout must be in 1..{len(train) - 1} (or set data.select_per_class)")
        kept = sorted(set(range(len(train))) - set(held))
        select, train = Subset(Transformed(train, eval_tf), held), Subset(train, kept)
    if not data.select_per_class:
        select = cap(select, data.max_eval)
    return cap(train, data.max_train), select, open_test(study, eval_tf, registry)


def split_labels(ds: Dataset) -> list[int]:
    """Every image's label, read from the split's records (or its ``labels``), not its pixels."""
    records = getattr(ds, "records", None)
    labels = [r.label for r in records] if records is not None else getattr(ds, "labels", None)
    if labels is None:
        raise ValueError(f"{type(ds).__name__} does not say its labels without reading every image, which select_per_class needs")
    return list(labels)


def per_class(ds: Dataset, n: int, split: str) -> list[int]:
    """The indices of ``n`` images of every class of ``ds``, in the order of a fixed permutation
    (the same images every time), sorted; ValueError naming the classes with fewer."""
    labels = split_labels(ds)
    taken: dict[int, list[int]] = {label: [] for label in labels}
    for i in torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist():
        if len(taken[labels[i]]) < n:
            taken[labels[i]].append(i)
    short = sorted(label for label, got in taken.items() if len(got) < n)
    if short:
        raise ValueError(f"data.select_per_class={n}, but split {split!r} has fewer images of class(es) {short[:10]}")
    return sorted(i for got in taken.values() for i in got)


def open_test(study: Study, transform, registry: Registry) -> Dataset:
    """The test set every run of ``study`` is scored on (``max_eval`` images of the test split at
    most), in the order of each run's ``per_image.npz``."""
    return cap(open_split(study, study.data.test_split, transform, registry), study.data.max_eval)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (augmentation, shuffling, dropout): a function of (seed,
    epoch) alone, so a resumed run repeats its epoch exactly."""
    return seed * 100_003 + epoch

"""Datasets for WSOL: readers of the real formats, and SynthWSOL, a built-in synthetic benchmark.

Readers register through the ``spgkit_register_datasets`` hook, as heads and backbones do; a
plugin adds a format the same way. Every dataset returns :class:`Sample` dicts (image, label, boxes, mask, ignore, image_id), takes a
``transform`` applied to the whole dict, and has ``num_classes`` and ``class_names``. Batch with
:func:`collate`; preprocess with :func:`train_transform` / :func:`eval_transform`. Bad input raises
:class:`DataError` naming the file and line, or, with ``on_error="skip"``, is skipped, counted in
``dataset.skipped`` and reported in one warning. A reader may contribute metrics of its own
annotations (SynthWSOL's part scores) as its ``diagnostics`` (:mod:`spgkit.data.diagnostics`).
"""

from __future__ import annotations

from spgkit.data.archive import extract, resolve_local
from spgkit.data.cub import CUB
from spgkit.data.folder_csv import FolderCSV
from spgkit.data.imagenet import ImageNet
from spgkit.data.pets import OxfordPets
from spgkit.data.sample import DataError, Sample, collate, make_sample
from spgkit.data.synth import SynthSample, SynthWSOL
from spgkit.data.tiny_imagenet import TinyImageNet
from spgkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BenchmarkResize, eval_transform, image_transform, train_transform
from spgkit.data.wsol_metadata import WSOLMetadata

from spgkit.hookspecs import hookimpl  # noqa: E402


@hookimpl
def spgkit_register_datasets(register):
    """The core's readers and SynthWSOL."""
    for name, reader in (
        ("synthwsol", SynthWSOL),
        ("cub", CUB),
        ("imagenet", ImageNet),
        ("wsol_metadata", WSOLMetadata),
        ("tiny_imagenet", TinyImageNet),
        ("pets", OxfordPets),
        ("folder_csv", FolderCSV),
    ):
        register(reader, name=name)


__all__ = [
    "BenchmarkResize",
    "CUB",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataError",
    "FolderCSV",
    "ImageNet",
    "OxfordPets",
    "Sample",
    "SynthSample",
    "SynthWSOL",
    "TinyImageNet",
    "WSOLMetadata",
    "collate",
    "eval_transform",
    "extract",
    "image_transform",
    "resolve_local",
    "make_sample",
    "train_transform",
]

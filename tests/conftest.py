"""Shared test set-up: no network, no implicit plugins, and the built-in methods on request."""

import os
import signal

# Set before anything imports timm/huggingface_hub or builds a plugin manager.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"

# A suite started in the background of a shell (`cmd &`) inherits SIGINT ignored, and so would
# every run the Ctrl-C tests start and interrupt. A handler here is reset to the default in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPGKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $SPGKIT_SHARED_DATA); the test is skipped where it is absent."""
    if not (SHARED_DATA / "oxford-iiit-pet-sample.tar").exists():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def plugin_manager():
    """A plugin manager with exactly the built-in method plugins (SPG, ACoL, HaS, ADL, CutMix, TS-CAM) registered."""
    import spgkit_acol
    import spgkit_adl
    import spgkit_cutmix
    import spgkit_has
    import spgkit_spg
    import spgkit_tscam

    from spgkit.plugins import get_plugin_manager

    pm = get_plugin_manager(autoload=False)
    for name, module in (("spg", spgkit_spg), ("acol", spgkit_acol), ("has", spgkit_has), ("adl", spgkit_adl), ("cutmix", spgkit_cutmix), ("tscam", spgkit_tscam)):
        pm.register(module, name=f"{name} (spgkit-{name})")
    return pm


@pytest.fixture
def registry(plugin_manager):
    from spgkit.plugins import Registry

    return Registry(plugin_manager)

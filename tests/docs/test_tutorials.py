"""Every tutorial under docs/tutorials runs as a plain script, without Sphinx.

The docs build runs them too (sphinx-gallery), but CI does not build the docs on every change: these
tests make a refactor that breaks a tutorial fail the test suite. Each script runs in a subprocess
from an empty working directory with its own empty temporary folder, and must leave both empty.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"

# Runs a tutorial as __main__ with the non-interactive backend, then reports the figures left open
# (a script's plt.show() does not close them under Agg).
RUNNER = """
import runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
runpy.run_path(sys.argv[1], run_name="__main__")
sizes = [tuple(int(v) for v in plt.figure(n).get_size_inches() * 100) for n in plt.get_fignums()]
print(f"@@figures {len(sizes)} {sizes}")
"""

# What each tutorial must print (beyond running): the evidence that it did its job.
EXPECTED = {
    "plot_localize.py": {
        "figures": 1,
        "text": ["gt_known_loc", "heads: ['spg_b', 'spg_c']", "seed b2: (6, 48, 48)", "seed b1: (6, 48, 48)", "seed c: (6, 48, 48)", "IoU with the ground truth"],
        # The study itself names its arms' rows; this tutorial trains one arm directly.
        "rows": [],
    },
    "plot_custom_head.py": {
        "figures": 2,
        "text": ["cutout from file <folder>/cutout.py", "spgkit_cutout.Cutout", "from cutout (spgkit-cutout)", "from spg (spgkit-spg)", "# cutout_ablation"],
        "rows": ["cam", "cutout", "spg_b", "spg_b+cutout"],
    },
    "plot_own_data.py": {
        "figures": 2,
        "text": ["image,label,x0,y0,x1,y1"],
        "rows": ["cam", "spg_b"],
    },
}


def test_every_tutorial_is_covered():
    assert sorted(p.name for p in TUTORIALS.glob("plot_*.py")) == sorted(EXPECTED)


def run_tutorial(name: str, tmp_path: Path, autoload: str) -> subprocess.CompletedProcess:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": autoload,
        "TMPDIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
        # torch (imported by torchvision) may create its compiler cache in TMPDIR from a
        # background thread, whether or not anything is compiled: not the tutorial's file.
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "torch-cache"),
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(TUTORIALS / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert sorted(os.listdir(cwd)) == [], f"{name} wrote into its working directory"
    assert sorted(os.listdir(tmp)) == [], f"{name} left temporary files behind"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs(name, tmp_path):
    # The Hide-and-Seek tutorial must switch plugin discovery on for itself, so it gets the test
    # suite's setting (off); the others rely on the installed plugins, as a user's script would.
    autoload = "1" if name == "plot_custom_head.py" else "0"
    result = run_tutorial(name, tmp_path, autoload)
    out = result.stdout
    expected = EXPECTED[name]
    for text in expected["text"]:
        assert text in out, f"{name} did not print {text!r}:\n{out[-3000:]}"
    for arm in expected["rows"]:
        assert f"\n| {arm} | 1 |" in out, f"{name}: no results row for arm {arm!r}:\n{out[-3000:]}"
    figures = int(out.rsplit("@@figures ", 1)[1].split()[0])
    assert figures >= expected["figures"], f"{name} drew {figures} figure(s), expected {expected['figures']}"
    if name == "plot_custom_head.py":
        # It installed its plugin into a temporary folder, not into the environment running it.
        check = "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in m.distributions()))"
        installed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
        assert "spgkit-spg" in installed and "spgkit-cutout" not in installed

"""Hide-and-Seek (Singh and Lee, ICCV 2017) as an spgkit head.

``has``  In training, every image is cut into square patches of ``grid_size`` pixels and each patch
         is hidden with probability ``drop_rate``, drawn per image and per patch, the same for all
         channels, by setting it to 0 in the normalised input: the mean colour. Nothing changes at
         test time; the head has no layers, loss or map.

By default it computes what the WSOL benchmark's ``wsol/method/has.py`` computes
(github:clovaai/wsolevaluation), which names the patch side ``has_grid_size`` (4 pixels) and hides
a patch when its uniform draw is at most the drop rate (0.5). Two differences: the draws come from
torch's generator, not Python's ``random``, so the masks are the same in law, not draw for draw;
and the benchmark's loops swap the image's sides, so on an image that is not square a band along
the bottom (taller than wide) or the right (wider than tall) is never hidden: here every pixel can
be. The benchmark trains on square crops, where the two agree.
"""

from __future__ import annotations

import torch

import spgkit
from spgkit.config import BENCHMARK_SPACE, Param
from spgkit.heads import GuidanceHead, ModelSpec, check_int, check_number


def hide_patches(images: torch.Tensor, draws: torch.Tensor, grid_size: int, drop_rate: float) -> torch.Tensor:
    """``images`` (N, C, H, W) with patch (i, j), pixels ``[i*g, (i+1)*g) x [j*g, (j+1)*g)``
    clipped to the image, set to 0 where ``draws[n, i, j] <= drop_rate``. ``draws`` is (N,
    ceil(H/g), ceil(W/g))."""
    height, width = images.shape[-2:]
    shown = (draws > drop_rate).to(images.dtype)
    shown = shown.repeat_interleave(grid_size, 1).repeat_interleave(grid_size, 2)[:, :height, :width]
    return images * shown[:, None]


class HideAndSeek(GuidanceHead):
    """Hide-and-Seek: hide random patches of every training image.

    Args:
        spec: the model spec (unused: the head has no layers).
        grid_size: the side of a patch in pixels (the benchmark's ``has_grid_size``, 4); the paper
            reports patch sides of 16 to 56 pixels at 224 px. 0 hides nothing.
        drop_rate: the probability of hiding a patch (0.5).
    """

    name = "has"
    search_space = (
        Param("drop_rate", "uniform", 0.0, 1.0, source=f"{BENCHMARK_SPACE}; Murtaza et al. 2025 list the same"),
        Param("grid_size", "int", 2, 64, source="spgkit's choice: the table's 'drop area' in [0, 1] has no known mapping to the code's patch side in pixels"),
    )

    def __init__(self, spec: ModelSpec, *, grid_size: int = 4, drop_rate: float = 0.5):
        super().__init__(spec)
        self.grid_size = check_int(self.name, "grid_size", grid_size, minimum=0)
        self.drop_rate = check_number(self.name, "drop_rate", drop_rate, 0.0, 1.0)

    def transform_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grid_size == 0:
            return images, targets
        n, _, height, width = images.shape
        cells = (-(-height // self.grid_size), -(-width // self.grid_size))
        draws = torch.rand((n, *cells), device=images.device)
        return hide_patches(images, draws, self.grid_size, self.drop_rate), targets


@spgkit.hookimpl
def spgkit_register_heads(register):
    """Hide-and-Seek."""
    register(HideAndSeek)

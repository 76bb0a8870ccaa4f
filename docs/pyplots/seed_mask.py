"""A seed mask from a score map with :func:`spgkit.guidance.seed_mask` (run by the docs build's
``plot`` directive)."""

import matplotlib.pyplot as plt
import torch

from spgkit.guidance import IGNORE, minmax_normalize, seed_mask

# A score map with a strong peak (a discriminative part) on a weaker, larger blob (the object).
ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
body = torch.exp(-((xs + 0.1) ** 2 / 0.18 + (ys - 0.05) ** 2 / 0.12))
part = torch.exp(-((xs - 0.45) ** 2 + (ys + 0.35) ** 2) / 0.01)
scores = minmax_normalize(0.55 * body + part)[None]  # (1, H, W) in [0, 1]

panels = [("score map O", scores[0], "viridis")]
for delta_h, delta_l in ((0.7, 0.05), (0.5, 0.05)):
    mask = seed_mask(scores, delta_h, delta_l)[0].float()
    shown = torch.where(mask == IGNORE, torch.tensor(0.5), mask)
    panels.append((f"seed mask, delta_h={delta_h}, delta_l={delta_l}", shown, "gray"))

fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.0))
for ax, (title, image, cmap) in zip(axes, panels):
    ax.imshow(image, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.text(0.5, 0.01, "white: object (1)    black: background (0)    grey: ignored (255, left out of the loss)", ha="center", fontsize=8)
fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.1, wspace=0.08)

if __name__ == "__main__":
    plt.show()

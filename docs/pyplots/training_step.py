"""One training step of an spgkit model, drawn with matplotlib (run by the docs build's ``plot``
directive; ``python docs/pyplots/training_step.py`` shows it on its own)."""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

CORE, HEAD, LOSS, DATA = "#dbe9f6", "#fde3c8", "#f6d5d5", "#e4e4e4"

fig, ax = plt.subplots(figsize=(10, 5.6))
ax.set_xlim(0, 100)
ax.set_ylim(0, 60)
ax.axis("off")


def box(x, y, w, h, text, colour, size=8.5, weight="normal"):
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4,rounding_size=1.2", fc=colour, ec="#555555", lw=1)
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight)


def arrow(x0, y0, x1, y1, text="", dashed=False, colour="#333333", offset=(0, 1.2)):
    ax.add_patch(
        FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=11, lw=1.1, color=colour,
            linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2,
        )
    )
    if text:
        ax.text((x0 + x1) / 2 + offset[0], (y0 + y1) / 2 + offset[1], text, ha="center", va="bottom", fontsize=7, color=colour)


# Inputs and the image transforms (training only).
box(1, 44, 11, 8, "images\nlabels", DATA)
box(16, 44, 17, 8, "head.transform_batch\n(train only; HaS,\nCutMix: targets too)", HEAD, size=7.5)
arrow(12.5, 48, 15.5, 48)

# Backbone stages by role.
box(37, 40, 22, 16, "", CORE)
ax.text(48, 53.3, "backbone (Inception-V3,\nSPG stride surgery)", ha="center", va="center", fontsize=8, weight="bold")
for i, (role, note) in enumerate((("low", "stride 4"), ("mid", "Mixed_5d"), ("late", "Mixed_6d"), ("high", "Mixed_6e"))):
    ax.text(39 + i * 5.3, 44, f"{role}\n{note}", ha="center", va="center", fontsize=6.2)
arrow(33.5, 48, 36.5, 48)

box(63, 44, 15, 8, "head.feature_\ntransforms (train;\nADL: in layers)", HEAD, size=7.5)
arrow(59.5, 48, 62.5, 48)
ax.text(61.6, 54.5, "features\nby role", ha="center", va="center", fontsize=7, color="#333333")

# Classifier A3/A4.
box(82, 40, 17, 16, "", CORE)
ax.text(90.5, 53, "classifier", ha="center", va="center", fontsize=8, weight="bold")
ax.text(90.5, 46.5, "A3: 2 x (3x3 conv,\nReLU, dropout)\nA4: 1x1 conv -> K\nCAM: N x K x h x w\nlogits = GAP(CAM)", ha="center", va="center", fontsize=6.8)
arrow(78.5, 48, 81.5, 48, "high")

# Heads read the context.
box(26, 18, 50, 13, "", HEAD)
ax.text(51, 28.3, "heads, in the order their needs set: head(ctx) -> HeadOutput", ha="center", va="center", fontsize=8, weight="bold")
ax.text(
    51, 22.8,
    "SPG-B: B1 on mid, B2 on late; seed masks {0, 1, 255}\nfrom the CAM (for B2) and from sigmoid(B2) (for B1)\n"
    "SPG-C: on A3 features; seed mask from SPG-B's fused map\n"
    "ACoL: second classifier on high with A's peak erased; map fused by max\n"
    "HaS, ADL, CutMix: transforms only (no forward output)",
    ha="center", va="center", fontsize=6.6,
)
arrow(70, 43.5, 60, 31.5, "features", offset=(-3.5, -1))
arrow(86, 39.5, 72, 31.5)
ax.text(85.3, 31.2, "HeadContext: features,\nCAM, labels, earlier\nheads' outputs", ha="center", va="center", fontsize=7, color="#333333")

# Losses.
box(82, 4, 17, 12, "loss = CE(logits, targets)\n+ sum of\nweight x head losses", LOSS, size=7.5)
arrow(93, 39.5, 93, 16.5, "logits", offset=(3, 0))
arrow(76.5, 20, 81.5, 12, "head\nlosses", offset=(-3.5, -4.5))
box(1, 19, 20, 11, "masks are targets:\nbuilt under no_grad,\nno gradient flows\nthrough them", DATA, size=7.5)
arrow(25.5, 24.5, 21.5, 24.5, dashed=True, colour="#777777")

# Inference.
box(22, 2, 50, 10, "inference (no labels): localization map = min-max normalised CAM of the\n"
    "chosen class, fused by element-wise max with the maps heads return\n"
    "-> threshold -> largest connected region -> box", CORE, size=7)
arrow(47, 17.5, 47, 12.5, "map (optional)", dashed=True, offset=(6, -1.5))

fig.tight_layout()

if __name__ == "__main__":
    plt.show()

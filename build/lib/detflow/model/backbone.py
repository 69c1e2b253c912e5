"""The backbone of a detector: its pretrained trunk, the trunk's stages, and freezing.

The *trunk* is the ImageNet classification network inside a detector (ResNet, MobileNet,
VGG), without the FPN or heads. Its *stages* follow torchvision's ``trainable_backbone_layers``:
ResNet: stem + ``layer1..4`` (5); MobileNet: the stem, each strided block onwards and the last
conv (6); VGG (SSD300): the stem and each pooling step onwards (4). ``k`` trainable stages
means the last ``k`` train and the others are frozen (``requires_grad=False``, and their
batch-norm statistics fixed by :func:`train_mode`).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

from detflow.core.errors import ConfigError


def trunk(model: nn.Module) -> nn.Module:
    """The pretrained classification trunk inside ``model``'s backbone."""
    backbone = model.backbone
    if hasattr(backbone, "body"):  # BackboneWithFPN: an IntermediateLayerGetter
        return backbone.body
    if hasattr(backbone, "features"):  # SSD / SSDlite feature extractors
        return backbone.features
    if isinstance(backbone, nn.Sequential):  # mobilenet_backbone(fpn=False): trunk, 1×1 conv
        return backbone[0]
    raise ConfigError(f"{type(model).__name__}: cannot find the backbone's trunk")


def stages(model: nn.Module) -> list[list[nn.Module]]:
    """The trunk's stages, input first; each a list of modules (stages without parameters,
    such as a lone pooling layer, are left out)."""
    blocks, starts = _blocks(trunk(model))
    names = [name for name, _ in blocks]
    if any(hasattr(block, "_is_cn") for _, block in blocks):  # MobileNet (torchvision's rule)
        starts |= {i for i, (_, b) in enumerate(blocks) if getattr(b, "_is_cn", False)}
        starts.add(len(blocks) - 1)
    elif any(name.startswith("layer") for name in names):  # ResNet
        starts |= {i for i, name in enumerate(names) if name.startswith("layer")}
    else:  # VGG
        starts |= {i for i, (_, b) in enumerate(blocks) if isinstance(b, nn.MaxPool2d)}
    bounds = sorted(starts) + [len(blocks)]
    groups = [[b for _, b in blocks[lo:hi]] for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return [g for g in groups if any(True for m in g for _ in m.parameters())]


def _blocks(module: nn.Module) -> tuple[list[tuple[str, nn.Module]], set[int]]:
    """Children of the trunk, flattening one level where the trunk is a list of plain
    ``nn.Sequential`` parts (SSDlite); each part's first block starts a stage."""
    children = list(module.named_children())
    if not all(type(child) is nn.Sequential for _, child in children):
        return children, {0}
    blocks, starts = [], set()
    for part_name, part in children:
        starts.add(len(blocks))
        blocks += [(f"{part_name}.{name}", child) for name, child in part.named_children()]
    return blocks, starts


def check_stage_count(model: nn.Module, count: int, *, key: str = "trainable stages") -> None:
    """Raise ConfigError naming ``key`` unless ``count`` is in 0..(the trunk's stages)."""
    total = len(stages(model))
    if not isinstance(count, int) or not 0 <= count <= total:
        raise ConfigError(
            f"{key}={count!r}: {type(model).__name__}'s backbone has {total} stages; use 0..{total}"
        )


def set_trainable_stages(model: nn.Module, count: int, *, key: str = "trainable stages") -> None:
    """Make the last ``count`` trunk stages trainable and freeze the others."""
    check_stage_count(model, count, key=key)
    groups = stages(model)
    for index, group in enumerate(groups):
        for module in group:
            module.requires_grad_(index >= len(groups) - count)


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d`` holding its
    statistics and affine weights (what torchvision does for pretrained trunks). Returns the
    number replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    value = getattr(child, key)
                    if value is not None:
                        getattr(frozen, key).copy_(value.detach())
                setattr(parent, name, frozen.to(child.running_mean.device))
                replaced += 1
    return replaced


def train_mode(model: nn.Module) -> None:
    """``model.train()``, with frozen batch-norm layers of the trunk kept in eval mode."""
    model.train()
    for module in trunk(model).modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.eval()


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone, head)``: the trunk's parameters and all others (FPN, RPN, heads), frozen
    ones included (they may be unfrozen later; the optimizer skips those without a gradient)."""
    backbone_ids = {id(p) for p in trunk(model).parameters()}
    params = list(model.parameters())
    return (
        [p for p in params if id(p) in backbone_ids],
        [p for p in params if id(p) not in backbone_ids],
    )

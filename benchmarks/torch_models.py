"""PyTorch eager equivalents of aisci's ViT, CIFAR ResNet and airbench-style
FastCNN, for benchmarks.

Same shapes and arithmetic as aisci/models/vit.py and resnet.py (pre-norm
blocks, LayerNorm eps 1e-6, tanh GELU, mean pooling; 3x3 CIFAR stem, basic
blocks, BatchNorm momentum 0.1 = Flax's 0.9), written the way a PyTorch user
would (nn.MultiheadAttention, nn.Conv2d), not a port of aisci's code.
"""

import torch
from torch import nn


class Block(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, mlp_dim),
                             nn.GELU(approximate='tanh'),
                             nn.Linear(mlp_dim, width))

  def forward(self, x):
    y = self.norm1(x)
    x = x + self.attn(y, y, y, need_weights=False)[0]
    return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
  """images [batch, 3, h, w] -> logits [batch, num_classes]; mean pooling."""

  def __init__(self, *, num_classes: int, image_size: int, patch_size: int,
               width: int, depth: int, heads: int, mlp_dim: int):
    super().__init__()
    self.embedding = nn.Conv2d(3, width, patch_size, stride=patch_size)
    tokens = (image_size // patch_size)**2
    self.pos_embedding = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
    self.blocks = nn.Sequential(*[Block(width, heads, mlp_dim)
                                  for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, num_classes)

  def forward(self, images):
    x = self.embedding(images).flatten(2).transpose(1, 2)  # [b, tokens, width]
    x = self.blocks(x + self.pos_embedding)
    return self.head(self.norm(x).mean(dim=1))


class BasicBlock(nn.Module):
  """Two 3x3 convs with BatchNorm; projection shortcut when the shape changes."""

  def __init__(self, in_features: int, features: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_features, features, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(features)
    self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(features)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_features != features:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_features, features, 1, stride, bias=False),
          nn.BatchNorm2d(features))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
  """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, stages of width*2**i."""

  def __init__(self, *, num_classes: int, width: int = 64):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(width), nn.ReLU())
    layers, in_features = [], width
    for stage in range(4):
      features = width * 2**stage
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        layers.append(BasicBlock(in_features, features, stride))
        in_features = features
    self.blocks = nn.Sequential(*layers)
    self.head = nn.Linear(in_features, num_classes)

  def forward(self, images):
    x = self.blocks(self.stem(images))
    return self.head(x.mean(dim=(2, 3)))


class Scale(nn.Module):
  """Multiplies by a constant (the logits by 1/9: a soft first softmax)."""

  def __init__(self, factor: float):
    super().__init__()
    self.factor = factor

  def forward(self, x):
    return x * self.factor


def airbench_net(widths, num_classes: int = 10, *, aisci_shapes: bool = False,
                 bn_momentum: float = 0.6, head_scale: float = 1 / 9
                 ) -> nn.Sequential:
  """airbench94's network (benchmarks/torch_cifar.py), NCHW: a frozen 2x2
  whitening conv with bias (24 channels; its kernel set by the caller),
  GELU, per width conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3
  -> BatchNorm -> GELU (3x3 convs start as the identity on their first
  filters; BatchNorm scales fixed at 1, eps 1e-12; bn_momentum in Flax's
  sense), max-pool, a bias-free linear layer, times head_scale.

  aisci_shapes=True pads the whitening conv to keep 32x32, as aisci's
  FastCNN does (its groups see 32/16/8 pixels, not 31/15/7: 1.22x the
  multiply-adds), and max-pools the last map whole: aisci's shapes and
  work, for benchmarks/train_step.py. False: airbench's.
  """

  def conv3x3(c_in, c_out):
    layer = nn.Conv2d(c_in, c_out, 3, padding='same', bias=False)
    with torch.no_grad():  # an implicit residual: identity on c_in filters
      nn.init.dirac_(layer.weight[:c_in])
    return layer

  def norm(channels):
    layer = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - bn_momentum)
    layer.weight.requires_grad = False
    return layer

  layers = [nn.Conv2d(3, 24, 2, padding='same' if aisci_shapes else 0,
                      bias=True), nn.GELU()]
  c_in = 24
  for width in widths:
    layers += [conv3x3(c_in, width), nn.MaxPool2d(2), norm(width), nn.GELU(),
               conv3x3(width, width), norm(width), nn.GELU()]
    c_in = width
  layers += [nn.AdaptiveMaxPool2d(1) if aisci_shapes else nn.MaxPool2d(3),
             nn.Flatten(), nn.Linear(c_in, num_classes, bias=False),
             Scale(head_scale)]
  net = nn.Sequential(*layers)
  net[0].weight.requires_grad = False  # the whitening kernel stays fixed
  return net


def decayed_groups(model: nn.Module, weight_decay: float) -> list[dict]:
  """Weight decay on conv/linear weights only, as aisci's `kernel` mask."""
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    is_kernel = name.endswith('weight') and p.ndim > 1
    (decay if is_kernel else no_decay).append(p)
  return [dict(params=decay, weight_decay=weight_decay),
          dict(params=no_decay, weight_decay=0.0)]

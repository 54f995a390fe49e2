"""PyTorch eager equivalents of aisci's ViT and CIFAR ResNet, for benchmarks.

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


def decayed_groups(model: nn.Module, weight_decay: float) -> list[dict]:
  """Weight decay on conv/linear weights only, as aisci's `kernel` mask."""
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    is_kernel = name.endswith('weight') and p.ndim > 1
    (decay if is_kernel else no_decay).append(p)
  return [dict(params=decay, weight_decay=weight_decay),
          dict(params=no_decay, weight_decay=0.0)]

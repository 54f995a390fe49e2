"""airbench94's recipe in PyTorch eager (benchmarks/torch_cifar.py runs it;
its docstring describes the recipe): the network (torch_models.airbench_net),
the whitening of its stem, the epoch augmentation, lookahead, the test-time
views and one training run. No flags, so tests import it.
"""

import math
import time

import numpy as np

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
HYPER = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, bias_lr_mult=64.0,
             label_smoothing=0.2, bn_momentum=0.6, head_scale=1 / 9,
             lookahead_from_epoch=3, lookahead_every=5,
             lookahead_decay=0.95**5, lookahead_power=3.0,
             whiten_bias_epochs=3, whiten_eps=5e-4, whiten_images=5000,
             translate=2, schedule=(0.2, 0.23, 0.07))


def make_net(widths, num_classes=10, aisci_shapes=False):
  """benchmarks/torch_models.py airbench_net with airbench94's constants."""
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  return torch_models.airbench_net(
      widths, num_classes, aisci_shapes=aisci_shapes,
      bn_momentum=HYPER['bn_momentum'], head_scale=HYPER['head_scale'])


def whiten_(conv, images, eps):
  """Sets `conv`'s kernel [2c, c, k, k] to the whitening transform of the
  k x k patches of `images` [n, c, h, w] and its negation."""
  import torch  # pylint: disable=g-import-not-at-top
  c, k = images.shape[1], conv.weight.shape[-1]
  patches = images.unfold(2, k, 1).unfold(3, k, 1)  # [n, c, h', w', k, k]
  patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
  covariance = patches.T @ patches / len(patches)
  eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
  # Largest eigenvalue first, rows are the eigenvectors.
  eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
  kernel = eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]
  kernel = kernel.reshape(c * k * k, c, k, k).to(conv.weight.dtype)
  with torch.no_grad():
    conv.weight.copy_(torch.cat([kernel, -kernel]))


def triangle(total_steps, start, peak, end):
  """Schedule factors for steps 0..total_steps: start -> 1 -> end, peak at
  round-down(peak * total_steps)."""
  top = int(peak * total_steps)
  return np.interp(np.arange(total_steps + 1), [0, top, total_steps],
                   [start, 1.0, end])


def _translate(images, shift, generator):
  """Each image [c, h, w] of the reflect-padded `images` cropped back to
  h - 2 * shift at its own random offset in [0, 2 * shift]^2."""
  import torch  # pylint: disable=g-import-not-at-top
  n, _, h, w = images.shape
  size_h, size_w = h - 2 * shift, w - 2 * shift
  offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator,
                          device='cpu').to(images.device)
  out = torch.empty((n, images.shape[1], size_h, size_w), dtype=images.dtype,
                    device=images.device)
  for dy in range(2 * shift + 1):
    for dx in range(2 * shift + 1):
      pick = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
      out[pick] = images[pick, :, dy:dy + size_h, dx:dx + size_w]
  return out


def _tta_logits(net, images):
  """airbench's level-2 test-time views: mirror x {none, up-left one pixel,
  down-right one pixel}, the unshifted pair weighted as both shifted ones."""
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  mirrored = lambda x: 0.5 * (net(x) + net(x.flip(-1)))
  padded = F.pad(images, (1,) * 4, mode='reflect')
  h, w = images.shape[-2:]
  shifted = 0.5 * (mirrored(padded[..., :h, :w])
                   + mirrored(padded[..., 2:h + 2, 2:w + 2]))
  return 0.5 * mirrored(images) + 0.5 * shifted


def train_torch(train, test, widths, epochs, batch_size, seed, device,
                dtype_name='float32') -> dict:
  """One run of the recipe (benchmarks/torch_cifar.py's docstring);
  train/test = (uint8 images [n, h, w, 3], int labels [n]) numpy arrays.
  Returns accuracies and seconds."""
  # pylint: disable=g-import-not-at-top
  import torch
  import torch.nn.functional as F
  from torch import nn
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(seed)
  generator = torch.Generator().manual_seed(seed)
  dtype = getattr(torch, dtype_name)
  sync = (torch.cuda.synchronize if device.startswith('cuda')
          else lambda: None)
  mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

  def to_tensor(images):
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
    return ((x / 255 - mean) / std).contiguous(
        memory_format=torch.channels_last)

  train_x, test_x = to_tensor(train[0]), to_tensor(test[0])
  train_y = torch.as_tensor(train[1], device=device).long()
  test_y = torch.as_tensor(test[1], device=device).long()
  n = len(train_y)
  steps_per_epoch = n // batch_size  # the last partial batch is dropped
  total_steps = math.ceil(steps_per_epoch * epochs)

  net = make_net(widths).to(device).to(memory_format=torch.channels_last)
  whiten_(net[0], train_x[:HYPER['whiten_images']], HYPER['whiten_eps'])
  net = net.to(dtype)
  for module in net.modules():  # BatchNorm keeps float32 statistics
    if isinstance(module, nn.BatchNorm2d):
      module.float()

  # airbench's decoupled hyperparameters, converted for torch.optim.SGD on
  # a summed loss: steps scale as 1 + 1 / (1 - momentum) under Nesterov.
  kilostep = 1024 * (1 + 1 / (1 - HYPER['momentum']))
  lr = HYPER['lr'] / kilostep
  decay = HYPER['weight_decay'] * batch_size / kilostep
  lr_bias = lr * HYPER['bias_lr_mult']
  # BatchNorm weights are frozen (requires_grad False): only biases train.
  biases = [m.bias for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
  others = [p for p in net.parameters() if p.requires_grad
            and not any(p is b for b in biases)]
  optimizer = torch.optim.SGD(
      [dict(params=biases, lr=lr_bias, weight_decay=decay / lr_bias),
       dict(params=others, lr=lr, weight_decay=decay / lr)],
      momentum=HYPER['momentum'], nesterov=True)
  factors = triangle(total_steps, *HYPER['schedule'])
  base_lrs = [group['lr'] for group in optimizer.param_groups]
  loss_fn = nn.CrossEntropyLoss(label_smoothing=HYPER['label_smoothing'],
                                reduction='sum')

  # Alternating flip: a random half mirrored once; all mirrored in odd epochs.
  flip = torch.rand(n, generator=generator).to(device) < 0.5
  base = torch.where(flip.view(-1, 1, 1, 1), train_x.flip(-1), train_x)
  pad = HYPER['translate']
  padded = F.pad(base, (pad,) * 4, mode='reflect')

  ema, step, train_s = None, 0, 0.0
  for epoch in range(math.ceil(epochs)):
    net[0].bias.requires_grad = epoch < HYPER['whiten_bias_epochs']
    sync()
    start = time.perf_counter()
    images = _translate(padded, pad, generator)
    if epoch % 2:
      images = images.flip(-1)
    order = torch.randperm(n, generator=generator).to(device)
    net.train()
    for i in range(steps_per_epoch):
      if step >= total_steps:
        break
      pick = order[i * batch_size:(i + 1) * batch_size]
      for group, base_lr in zip(optimizer.param_groups, base_lrs):
        group['lr'] = base_lr * factors[step]
      inputs = images[pick].to(dtype).contiguous(
          memory_format=torch.channels_last)
      loss = loss_fn(net(inputs).float(), train_y[pick])
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      step += 1
      if (epoch >= HYPER['lookahead_from_epoch']
          and step % HYPER['lookahead_every'] == 0):
        if ema is None:
          ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
          rho = (HYPER['lookahead_decay']
                 * (step / total_steps) ** HYPER['lookahead_power'])
          _lookahead(net, ema, rho)
    if ema is not None:
      _lookahead(net, ema, 1.0)  # the epoch ends at the averaged weights
    sync()
    train_s += time.perf_counter() - start

  start = time.perf_counter()
  net.eval()
  plain, tta = [], []
  with torch.no_grad():
    for images in test_x.split(1000):
      images = images.to(dtype)
      plain.append(net(images).float())
      tta.append(_tta_logits(net, images).float())
  accuracy = lambda logits: float(
      (torch.cat(logits).argmax(1) == test_y).float().mean())
  result = dict(accuracy=accuracy(plain), tta_accuracy=accuracy(tta),
                train_s=train_s, eval_s=time.perf_counter() - start,
                steps=total_steps, final_loss=loss.item() / batch_size)
  return result


def _lookahead(net, ema, rho):
  """ema <- rho * ema + (1 - rho) * weights; the weights <- ema (float
  tensors only: BatchNorm's batch counter stays)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    for name, value in net.state_dict().items():
      if value.is_floating_point():
        ema[name].lerp_(value, 1 - rho)
        value.copy_(ema[name])



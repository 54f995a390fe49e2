"""1-D patch embedding of float sequences in the transformer encoder."""

import chex
import jax
import numpy as np

from aisci import models
from aisci.train import steps


def test_patches_embed_windows_and_pad_to_a_multiple():
  model = models.build_model(dict(name='transformer', width=16, depth=1,
                                  num_heads=2, mlp_dim=32, max_len=8,
                                  patch_size=4, pool='none'), num_classes=0)
  x = np.random.default_rng(0).normal(size=(2, 10, 3)).astype(np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  # 10 positions -> 3 windows of 4 (2 padded); 4 * 3 values per window.
  chex.assert_shape(variables['params']['input_embed']['kernel'], (12, 16))
  out = model.apply(variables, x)
  chex.assert_shape(out, (2, 3, 16))
  # Changing a value moves only its window's token (before attention mixes
  # them): compare the embeddings directly.
  kernel = np.asarray(variables['params']['input_embed']['kernel'])
  bias = np.asarray(variables['params']['input_embed']['bias'])
  window = x[0, 4:8].reshape(-1)
  expected = window @ kernel + bias
  embed = model.apply(variables, x, capture_intermediates=True,
                      mutable=['intermediates'])[1]['intermediates']
  np.testing.assert_allclose(embed['input_embed']['__call__'][0][0, 1], expected,
                             rtol=1e-5, atol=1e-5)

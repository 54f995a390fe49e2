"""Flip and translate test-time augmentation on a batch sharded over 8 CPU
devices: each device keeps its own images and their other views (no
all-gather in the compiled program), with the logits of the unsharded
program."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECK = textwrap.dedent('''
    import re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from aisci.models import fastcnn, vit
    from aisci.train import steps

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ('data',))
    models = {
        'vit': vit.ViT(num_classes=10, variant=None, width=32, depth=1,
                       mlp_dim=64, num_heads=2, patch_size=4, stem='conv',
                       tta_flip=True, tta_translate=True,
                       head_zero_init=False),
        'fastcnn': fastcnn.FastCNN(num_classes=10, stem_width=8,
                                   widths=(8, 16, 16), tta_flip=True),
    }
    images = np.random.default_rng(0).normal(size=(64, 32, 32, 3)).astype(
        np.float32)
    for name, model in models.items():
      variables = steps.init_variables(model, jax.random.PRNGKey(1), images[:1])
      sharded = jax.jit(
          lambda v, x: model.apply(v, x),
          in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))))
      hlo = sharded.lower(variables, images).compile().as_text()
      gathers = len(re.findall(r'= [^ ]+ all-gather', hlo))
      plain = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
      np.testing.assert_allclose(sharded(variables, images), plain, atol=1e-5)
      print(name, 'ALL_GATHERS', gathers)
''')


def test_tta_keeps_the_batch_on_its_devices():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', CHECK], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'vit ALL_GATHERS 0' in result.stdout, result.stdout
  assert 'fastcnn ALL_GATHERS 0' in result.stdout, result.stdout

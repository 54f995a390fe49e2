"""benchmarks/: the PyTorch twins have aisci's shapes; tables print."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import compile_cache
from aisci import models
from benchmarks import common
from benchmarks import models as bench_models

torch = pytest.importorskip('torch')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_ratio_of(ratio: str, numerator: str, denominator: str) -> bool:
  """Whether printed `ratio` is `numerator / denominator` as printed.

  Each cell is rounded to the digits it shows, so the check allows the ratio
  of any values that round to the two cells (a rate printed as 108 may be
  108.4, which moves a ratio near 7 by 0.03).
  """
  def value_and_half_step(text):
    decimals = len(text.split('.')[1]) if '.' in text else 0
    return float(text), 0.5 * 10.0**-decimals
  r, r_half = value_and_half_step(ratio.strip())
  n, n_half = value_and_half_step(numerator.strip())
  d, d_half = value_and_half_step(denominator.strip())
  low, high = (n - n_half) / (d + d_half), (n + n_half) / (d - d_half)
  return low - r_half - 1e-9 <= r <= high + r_half + 1e-9


@pytest.mark.parametrize('name', ['vit_ti4', 'vit_tiny', 'resnet18_tiny'])
def test_torch_twin_has_the_same_parameter_count(name):
  config = bench_models.config_for(name)
  model = models.build_model(config.model, num_classes=10)
  size = config.input.image_size
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, 3)))
  aisci_count = sum(int(np.prod(x.shape))
                    for x in jax.tree.leaves(shapes['params']))
  twin = bench_models.torch_model(config)
  assert sum(p.numel() for p in twin.parameters()) == aisci_count
  # And it maps a batch to logits.
  logits = twin(torch.zeros(2, 3, size, size))
  assert tuple(logits.shape) == (2, 10)


def test_no_twin_for_fastcnn():
  assert not bench_models.has_torch_twin('fastcnn_cpu')
  # Its twin normalises whole batches: no twin for ghost batches.
  assert not bench_models.has_torch_twin('fastcnn_airbench_ghost')
  with pytest.raises(ValueError, match='No PyTorch twin'):
    bench_models.torch_model(bench_models.config_for('fastcnn_cpu'))


def test_no_twin_for_the_conv_stem_vit():
  # The PyTorch ViT embeds patches with one strided conv; the conv stem
  # would be compared with a different network.
  assert bench_models.has_torch_twin('vit_tiny')
  assert not bench_models.has_torch_twin('vit_tiny_conv')


@pytest.mark.parametrize('name', ['fastcnn_cpu', 'resnet18_tiny'])
def test_conv_grad_layer_list_is_the_models_convolutions(name):
  from benchmarks import conv_grad  # pylint: disable=g-import-not-at-top
  config = bench_models.config_for(name)
  _, layers = conv_grad.conv_layers(name)
  model = models.build_model(config.model, num_classes=10)
  size = config.input.image_size
  kernels = [x.shape for x in jax.tree.leaves(jax.eval_shape(
      model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))
  )['params']) if len(x.shape) == 4]
  listed = [(k, k, c_in, c_out) for _, c_in, c_out, k, _, count in layers
            for _ in range(count)]
  assert sorted(listed) == sorted(kernels)


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match='known'):
    bench_models.config_for('resnet1000')


def _with_session_compile_cache() -> dict[str, str]:
  """This environment, with JAX's persistent cache in the test session's
  folder for the subprocesses (jax reads these variables at import)."""
  env = dict(os.environ)
  if os.environ.get('AISCI_TEST_COMPILE_CACHE'):
    env.update(JAX_COMPILATION_CACHE_DIR=os.environ['AISCI_TEST_COMPILE_CACHE'],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(
                   compile_cache.MIN_COMPILE_TIME_SECS))
  return env


def test_table_aligns_columns():
  text = common.table(['a', 'long header'], [[1, 'x'], ['wide cell', 2]])
  lines = text.splitlines()
  assert len({len(line) for line in lines}) == 1
  assert lines[1].startswith('| ---')


def test_micro_batched_step_is_the_same_update_in_less_memory():
  # What `train_step --grad_accum_steps=k` times must be the step the loop
  # runs with config.grad_accum_steps=k: the same update (no BatchNorm, no
  # dropout in this model), with smaller temporaries.
  results = {}
  for k in (1, 2):
    train_step, state, batch = bench_models.aisci_train_step('vit_tiny', 16, k)
    compiled = train_step.lower(state, batch).compile()
    new_state, _ = compiled(state, batch)
    results[k] = (compiled.memory_analysis().temp_size_in_bytes,
                  jax.device_get(new_state.params))
  assert results[2][0] < 0.8 * results[1][0]
  chex.assert_trees_all_close(results[2][1], results[1][1], atol=2e-6)


def test_train_step_runs_each_model_on_its_configs_cpu_devices():
  # --devices=config (the default): vit_cifar.py:tiny sets 8, its tiny_muon
  # variant 2, so the two models must run on different device counts.
  # (tiny_muon, not the 2-device ViT-Ti/4: its worker took 17 s of CPU
  # where ViT-Ti/4's took 24 s.)
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.train_step', '--models=vit_tiny,vit_tiny_muon',
       '--notorch', '--rounds=1', '--warmup=0', '--repeats=1', '--batch_size=16'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'vit_tiny aisci 8 dev:' in result.stdout
  assert 'vit_tiny_muon aisci 2 dev:' in result.stdout
  rows = [line for line in result.stdout.splitlines() if line.startswith('| ')]
  assert 'aisci config.cpu_devices img/s' in rows[0]
  assert '[8 dev]' in rows[2] and '[2 dev]' in rows[3]


@pytest.mark.parametrize('name,float32_twin', [
    ('vit_tiny_bf16', 'vit_tiny'), ('resnet18_bf16', 'resnet18')])
def test_bfloat16_models_differ_from_their_float32_twin_in_dtype_only(
    name, float32_twin):
  config = bench_models.config_for(name).to_dict()
  twin = bench_models.config_for(float32_twin).to_dict()
  assert (config.pop('dtype'), twin.pop('dtype')) == ('bfloat16', 'float32')
  assert config == twin
  assert bench_models.has_torch_twin(name)


def test_train_step_times_bfloat16_on_both_sides():
  # PyTorch's twin runs under autocast(bfloat16), aisci with its dtype.
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.train_step', '--models=vit_tiny_bf16',
       '--rounds=1', '--warmup=0', '--repeats=1', '--batch_size=16',
       '--nohuge_pages'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines()
          if line.startswith('| vit_cifar.py:tiny, bf16')]
  assert len(rows) == 1
  aisci_rate, torch_rate, ratio = rows[0].split('|')[3:6]
  assert _is_ratio_of(ratio, aisci_rate, torch_rate), rows[0]


def test_eval_step_benchmark_times_the_loops_eval_step():
  # The sums count the batch's real rows and the outputs are per example:
  # the step the loop runs at every evaluation.
  eval_step, state, batch = bench_models.aisci_eval_step('vit_tiny', 16)
  sums, outputs = eval_step(state, batch)
  assert int(sums['count']) == 16
  chex.assert_shape(outputs, (16, 10))
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.eval_step', '--models=vit_tiny',
       '--batch_sizes=8,16', '--repeats=1'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith('| vit')]
  assert [row.split('|')[3].strip() for row in rows] == ['8', '16']
  assert rows[-1].split('|')[5].strip() == '1.00'
  # vit_tiny has a PyTorch twin and no test-time views: its forward pass is
  # timed beside aisci's, and the ratio is of the two columns.
  for row in rows:
    cells = [c.strip() for c in row.split('|')]
    assert _is_ratio_of(cells[8], cells[4], cells[7]), row
  assert not bench_models.has_inference_twin('vit_tiny_conv')  # flip views
  assert not bench_models.has_inference_twin('fastcnn_airbench')  # 6 views
  assert bench_models.has_inference_twin('resnet18')
  # The first row's ratio is its images/s over the reference row's.
  first, reference = rows[0].split('|'), rows[1].split('|')
  assert _is_ratio_of(first[5], first[4], reference[4]), rows


def test_first_step_times_the_entry_point_cold_and_warm(cifar10_small):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.first_step', '--repeats=1',
       f'--dataset=imagefolder:{cifar10_small}',
       '--main_flags=--config.model.width=16 --config.model.depth=1 '
       '--config.model.mlp_dim=16 --config.model.num_heads=1 '
       '--config.input.batch_size=16 --config.input.eval_batch_size=104'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [[cell.strip() for cell in line.split('|')[1:-1]]
          for line in result.stdout.splitlines() if line.startswith('| .')]
  assert [row[1] for row in rows] == ['cold caches', 'warm caches']
  for row in rows:  # the log's marks come in this order
    listed, begins, first = map(float, row[3:6])
    assert 0 < listed <= begins <= first, row


def test_predict_command_times_cold_and_warm_with_the_same_predictions(
    tiny_vit_run, cifar10_small):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.predict_command', '--repeats=1',
       f'--workdir={tiny_vit_run}', '--mallocs=auto,glibc',
       str(cifar10_small / 'test' / 'cat')],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [[cell.strip() for cell in line.split('|')[1:-1]]
          for line in result.stdout.splitlines() if line.startswith('| .')]
  assert [row[1:3] for row in rows] == [
      ['auto', 'empty cache'], ['glibc', 'empty cache'],
      ['auto', 'filled cache'], ['glibc', 'filled cache']]
  for row in rows:
    wall, cpu, rss = map(float, row[4:7])
    assert wall > 0 and cpu > 0 and rss > 100, row  # jax alone is ~200 MB


def test_allocators_benchmark_compares_each_setting_with_huge_pages():
  # glibc's malloc-debugging library stands in for tcmalloc where neither
  # tcmalloc nor jemalloc is installed: the row is made the same way.
  library = next((os.path.join(folder, 'libc_malloc_debug.so.0')
                  for folder in ('/usr/lib/x86_64-linux-gnu',
                                 '/usr/lib/aarch64-linux-gnu', '/usr/lib64')
                  if os.path.isfile(os.path.join(folder,
                                                 'libc_malloc_debug.so.0'))),
                 None)
  if library is None:
    pytest.skip('no glibc malloc-debugging library to preload')
  # Its three workers compile the same step: the session's compilation
  # cache (conftest.py) compiles it once. It times steps, not compilation.
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.allocators', '--models=vit_tiny:16:2',
       f'--libraries={library}', '--rounds=1', '--repeats=1'],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env=_with_session_compile_cache())
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [[cell.strip() for cell in line.split('|')[1:-1]]
          for line in result.stdout.splitlines() if line.startswith('| vit')]
  assert [row[2] for row in rows] == ['glibc', 'glibc, huge pages',
                                      'libc_malloc_debug.so.0']
  assert rows[1][4] == '1.00'  # the reference
  for row in rows:  # the ratio is the reference's step time over the row's
    assert _is_ratio_of(row[4], row[3], rows[1][3]), row
    assert int(row[5].replace(',', '')) >= 0  # page faults per step (0 if reused)
  # --libraries=none leaves glibc's two settings; no model needs to run to
  # show which settings a run would time.
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.allocators', '--models=',
       '--libraries=none'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "settings: ['glibc', 'glibc, huge pages']" in result.stdout, (
      result.stdout)
  assert '# no malloc library installed or given' in result.stdout


def test_main_env_is_the_restart_aisci_main_would_make(tmp_path, monkeypatch):
  from aisci import huge_pages  # pylint: disable=g-import-not-at-top
  library = tmp_path / 'libtcmalloc_minimal.so.4'
  library.write_bytes(b'')
  for variable in ('LD_PRELOAD', 'GLIBC_TUNABLES', 'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD'):
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setenv('AISCI_MALLOC', str(library))
  env = common.main_env()
  assert env['LD_PRELOAD'] == str(library)
  assert 'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD' in env
  assert 'AISCI_MALLOC' not in env  # only what the restart adds
  assert common.main_env(huge_pages=False) == {}
  monkeypatch.setenv('AISCI_MALLOC', 'glibc')
  if huge_pages.needs_restart(os.environ, huge_pages.thp_mode()):
    assert common.main_env() == {'GLIBC_TUNABLES': huge_pages.TUNABLE}
  else:
    assert common.main_env() == {}


def test_init_compile_compares_both_settings_and_their_bits():
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.init_compile', '--models=vit_tiny',
       '--rounds=1'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  compiled, model_init = [[c.strip() for c in line.split('|')[1:-1]]
                          for line in result.stdout.splitlines()
                          if line.startswith('| vit_tiny')]
  assert compiled[1] == '577,610' and compiled[5] == 'yes', compiled
  assert _is_ratio_of(compiled[4], compiled[2], compiled[3]), compiled
  # model.init op by op and steps.init_variables: both timed, and the same
  # values but for the rounding of a few normal draws (1 ulp when measured).
  assert float(model_init[1]) > 0 and float(model_init[2]) > 0, model_init
  assert _is_ratio_of(model_init[3], model_init[1], model_init[2]), model_init
  assert 0 <= int(model_init[4]) <= 4, model_init

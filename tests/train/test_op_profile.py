"""aisci/train/op_profile.py: HLO instructions are classified, and the
profiler's trace events carry their names (what profile_step's table sums)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np

from aisci.train import op_profile


def _mlp_loss(w1, w2, x):
  """A dot, an elementwise tanh, a second dot and a reduction."""
  return jnp.sum(jnp.tanh(x @ w1) @ w2)


def _compiled():
  rng = np.random.default_rng(0)
  w1 = jnp.asarray(rng.normal(size=(64, 128)), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(128, 32)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(256, 64)), jnp.float32)
  fn = jax.jit(jax.grad(_mlp_loss))
  return fn, fn.lower(w1, w2, x).compile(), (w1, w2, x)


def test_parse_hlo_classifies_fusions_by_content():
  hlo = """\
HloModule m

%fused_dot (p0: f32[4,8], p1: f32[8,2]) -> f32[4,2] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (p0: f32[4,2]) -> f32[4,2] {
  %p0 = f32[4,2]{1,0} parameter(0)
  ROOT %add.1 = f32[4,2]{1,0} add(%p0, %p0)
}

ENTRY %main (a: f32[4,8], b: f32[8,2]) -> f32[4,2] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,2]{1,0} parameter(1)
  %fusion.1 = f32[4,2]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(f)/dot_general"}
  ROOT %fusion.2 = f32[4,2]{1,0} fusion(%fusion.1), kind=kLoop, calls=%fused_add, metadata={op_name="jit(f)/add"}
}
"""
  instructions = op_profile.parse_hlo(hlo)
  assert instructions['fusion.1']['kind'] == 'fusion: dot'
  assert instructions['fusion.1']['op_name'] == 'jit(f)/dot_general'
  assert instructions['fusion.2']['kind'] == 'fusion: elementwise'
  assert instructions['a']['kind'] == 'parameter'


def test_parse_hlo_reads_this_jaxlibs_compiled_text():
  _, compiled, _ = _compiled()
  instructions = op_profile.parse_hlo(compiled.as_text())
  kinds = collections.Counter(i['kind'] for i in instructions.values())
  # Forward and backward hold four matrix products, in fusions or alone.
  assert kinds['fusion: dot'] + kinds['dot'] >= 4, kinds
  assert any('dot_general' in i['op_name'] for i in instructions.values())


def test_trace_events_are_named_after_hlo_instructions(tmp_path):
  fn, compiled, args = _compiled()
  instructions = op_profile.parse_hlo(compiled.as_text())
  jax.block_until_ready(fn(*args))
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    for _ in range(3):
      jax.block_until_ready(fn(*args))
  events = op_profile.trace_events(str(tmp_path))
  named = {e['name'] for e in events} & set(instructions)
  kinds = {instructions[name]['kind'] for name in named}
  assert kinds & {'fusion: dot', 'dot'}, (kinds, sorted(named)[:20])
  assert all(e.get('dur', 0) >= 0 for e in events)
  # The matched events carry time: what the script's tables sum.
  assert sum(e.get('dur', 0) for e in events if e['name'] in named) > 0


def test_short_op_name_keeps_the_end():
  name = 'jit(train_step)/' + 'a/' * 50 + 'Dense_0/dot_general'
  short = op_profile.short_op_name(name, width=30)
  assert len(short) == 30
  assert short.startswith('...') and short.endswith('Dense_0/dot_general')
  assert op_profile.short_op_name('jit(f)/add') == 'add'


def test_fold_blocks_merges_repeated_blocks_only():
  assert (op_profile.fold_blocks('jit(f)/ViT/encoderblock_11/MlpBlock_3/Dense_0/dot_general')
          == 'jit(f)/ViT/encoderblock_*/MlpBlock_3/Dense_0/dot_general')
  assert (op_profile.fold_blocks('jit(f)/ResNet/stage3_block2/Conv_0/conv')
          == 'jit(f)/ResNet/stage3_block*/Conv_0/conv')
  # Numbered layers inside a block are different layers: kept apart.
  assert op_profile.fold_blocks('jit(f)/m/Dense_0/dot') == 'jit(f)/m/Dense_0/dot'

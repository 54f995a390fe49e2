"""Per-operation times of a compiled XLA program, from `jax.profiler`'s trace.

`parse_hlo` classifies the instructions of a compiled module's text
(`jitted.lower(...).compile().as_text()`); `trace_events` reads the Perfetto
trace that `jax.profiler.trace(dir, create_perfetto_trace=True)` writes, whose
XLA:CPU events are named after those instructions. benchmarks/profile_step.py
joins the two.
"""

import collections
import glob
import gzip
import json
import os
import re

# `%name = shape opcode(operands), ..., calls=%fused, metadata={op_name="..."}`
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$')
_OPCODE = re.compile(r' ([a-z][a-z0-9\-]*)\(')
_COMPUTATION = re.compile(r'^\s*(?:ENTRY )?%?([\w.\-]+) .*\{\s*$')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def parse_hlo(text: str) -> dict[str, dict[str, str]]:
  """Instruction name -> {'opcode', 'kind', 'op_name'} of a compiled module.

  'kind' is the opcode, or for a fusion 'fusion: dot' / 'conv' / 'reduce' /
  'elementwise' after the heaviest thing its fused computation holds.
  """
  computations: dict[str, list[str]] = collections.defaultdict(list)
  instructions: dict[str, dict[str, str]] = {}
  current = None
  for line in text.splitlines():
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      name, rest = match.groups()
      opcode = _OPCODE.search(' ' + rest.split(', metadata=')[0])
      opcode = opcode.group(1) if opcode else '?'
      computations[current].append(opcode)
      calls = _CALLS.search(rest)
      op_name = _OP_NAME.search(rest)
      instructions[name] = dict(opcode=opcode,
                                calls=calls.group(1) if calls else '',
                                op_name=op_name.group(1) if op_name else '')
    elif (match := _COMPUTATION.match(line)) and ' = ' not in line:
      current = match.group(1)
  for info in instructions.values():
    info['kind'] = info['opcode']
    if info['opcode'] == 'fusion':
      inside = set(computations.get(info['calls'], ()))
      for opcode, label in (('convolution', 'conv'), ('dot', 'dot'),
                            ('reduce', 'reduce'), ('reduce-window', 'reduce')):
        if opcode in inside:
          info['kind'] = f'fusion: {label}'
          break
      else:
        info['kind'] = 'fusion: elementwise'
  return instructions


def trace_events(trace_dir: str) -> list[dict]:
  """The complete ('X') events of the newest Perfetto trace under trace_dir."""
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f'No perfetto_trace.json.gz under {trace_dir}.')
  with gzip.open(paths[-1], 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  return [e for e in events if e.get('ph') == 'X']


def short_op_name(op_name: str, width: int = 70) -> str:
  """The end of an HLO op_name: the model path and primitive that made it."""
  op_name = re.sub(r'^jit\([^)]*\)/', '', op_name)
  return op_name if len(op_name) <= width else '...' + op_name[-width + 3:]


# Path components of repeated blocks: encoderblock_3, stage2_block1, group2.
_BLOCK = re.compile(r'(?<=/)(encoderblock_|stage\d+_block|group|down|up)\d+(?=/)')


def fold_blocks(op_name: str) -> str:
  """op_name with repeated-block indices replaced by '*', so that the same
  layer of every block sums into one row: .../encoderblock_*/MlpBlock_3/..."""
  return _BLOCK.sub(lambda m: m.group(1) + '*', op_name)

"""Per-operation times of a compiled XLA program, from `jax.profiler`'s trace.

`parse_hlo` classifies the instructions of a compiled module's text
(`jitted.lower(...).compile().as_text()`); `trace_events` reads the Perfetto
trace that `jax.profiler.trace(dir, create_perfetto_trace=True)` writes, whose
XLA:CPU events are named after those instructions; `summarize` joins the
two: milliseconds per step by kind, by instruction and by the model layer
that made it. Used by the loop's config.profile (train/step_profile.py) and
by benchmarks/profile_step.py.
"""

import collections
import dataclasses
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


@dataclasses.dataclass
class Summary:
  """Thread-milliseconds per step of the traced instructions: in all
  (`total`), per kind, per instruction (with `calls` per step), and per
  (kind, op_name with repeated blocks folded)."""
  total: float
  by_kind: collections.Counter
  by_op: collections.Counter
  calls: collections.Counter
  by_source: collections.Counter

  def costliest(self, times: collections.Counter, limit=None):
    """(key, ms, share of total) of `times`, largest first."""
    return [(key, ms, ms / self.total) for key, ms in
            sorted(times.items(), key=lambda kv: -kv[1])[:limit]]


def summarize(instructions: dict[str, dict[str, str]], events: list[dict],
              steps: int) -> Summary:
  """Sums the trace `events` named after `instructions` (parse_hlo) over
  `steps` traced steps. Raises RuntimeError if none is."""
  by_op: collections.Counter = collections.Counter()
  calls: collections.Counter = collections.Counter()
  for event in events:
    name = event['name']
    if name in instructions:
      by_op[name] += event.get('dur', 0.0) / 1e3 / steps
      calls[name] += 1
  total = sum(by_op.values())
  if not total:
    raise RuntimeError('The trace has no events named after HLO instructions; '
                       'this jaxlib may not annotate XLA operations.')
  by_kind: collections.Counter = collections.Counter()
  # The same layer of every block in one row: which layer type costs most.
  by_source: collections.Counter = collections.Counter()
  for name, ms in by_op.items():
    info = instructions[name]
    by_kind[info['kind']] += ms
    by_source[info['kind'], fold_blocks(info['op_name'])] += ms
  return Summary(total=total, by_kind=by_kind, by_op=by_op,
                 calls=collections.Counter(
                     {k: v // steps for k, v in calls.items()}),
                 by_source=by_source)

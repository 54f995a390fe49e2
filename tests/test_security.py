"""Nothing on a load path unpickles: checkpoints are orbax (tensorstore and
JSON), weights safetensors or `numpy.load(allow_pickle=False)`, configs and
reports JSON. A static check of the package source, so a new loader that
unpickles fails here."""

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'aisci'

# Modules and calls that execute code from the data they read.
FORBIDDEN = re.compile(
    r'\bimport (c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b'
    r'|\bfrom (c?pickle|dill|cloudpickle|joblib|shelve|marshal) import\b'
    r'|\bpickle\.loads?\(|\btorch\.load\(|\byaml\.(unsafe_)?load\('
    r'|allow_pickle\s*=\s*True|\.from_pickle\(|pd\.read_pickle\(')


def sources():
  files = sorted(PACKAGE.rglob('*.py'))
  assert len(files) > 20, files  # the walk found the package
  return [(f.relative_to(PACKAGE.parent), f.read_text(encoding='utf-8'))
          for f in files]


def test_no_unpickling_anywhere_in_the_package():
  offending = [f'{path}: {m.group(0)}' for path, text in sources()
               for m in FORBIDDEN.finditer(text)]
  assert not offending, offending


def numpy_loads(text):
  """(line, refuses pickles?) of every np.load / numpy.load call in `text`."""
  calls = []
  for node in ast.walk(ast.parse(text)):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == 'load' and isinstance(node.func.value, ast.Name)
        and node.func.value.id in ('np', 'numpy')):
      safe = any(k.arg == 'allow_pickle' and isinstance(k.value, ast.Constant)
                 and k.value.value is False for k in node.keywords)
      calls.append((node.lineno, safe))
  return calls


def test_every_numpy_load_refuses_pickles():
  calls = [(path, line, safe) for path, text in sources()
           for line, safe in numpy_loads(text)]
  assert calls, 'expected the .npz readers to call numpy.load'
  unsafe = [f'{path}:{line}' for path, line, safe in calls if not safe]
  assert not unsafe, f'numpy.load without allow_pickle=False: {unsafe}'


def test_the_checks_catch_what_they_look_for():
  assert FORBIDDEN.search('import pickle')
  assert FORBIDDEN.search('x = torch.load(path)')
  assert FORBIDDEN.search('np.load(p, allow_pickle=True)')
  assert not FORBIDDEN.search('safetensors.numpy.load_file(path)')
  assert numpy_loads('np.load(os.fspath(p), allow_pickle=False)') == [(1, True)]
  assert numpy_loads('with np.load(path) as f: pass') == [(1, False)]

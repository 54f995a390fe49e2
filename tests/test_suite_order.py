"""tests/conftest.py's order of the test files: the long runs first."""

from conftest import LONG_FILES, REPO, file_order


def test_the_long_files_exist():
  # A renamed file would silently drop back to the end of the queue.
  missing = [name for name in LONG_FILES if not (REPO / name).is_file()]
  assert not missing, f'LONG_FILES names files that do not exist: {missing}'


def test_long_files_first_then_by_number_of_tests():
  nodeids = ['tests/a.py::t1', 'tests/b.py::t1', 'tests/b.py::t2',
             'tests/c.py::t1', 'tests/c.py::t2', 'tests/d.py::t1',
             LONG_FILES[1] + '::t', LONG_FILES[0] + '::t']
  order = file_order(nodeids)
  assert sorted(order, key=order.get) == [
      LONG_FILES[0], LONG_FILES[1], 'tests/b.py', 'tests/c.py', 'tests/a.py',
      'tests/d.py']

"""`tsv:PATH` / `csv:PATH` — text classification from delimited files.

Layout: `PATH/<split>.tsv` (or `.csv`) with a header row naming the columns,
e.g. SST-2's `sentence<TAB>label`. Options (config.input): `text_column`,
`label_column`, `class_names` (labels given as integers 0..N-1 are indices
into it; () names them by value; labels given as strings become classes in
sorted order), `tokenizer`, `vocab_size`, `max_length` (see
aisci/data/tokenizer.py). Files must be UTF-8.
"""

import csv
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from aisci.data import source as source_lib
from aisci.data import tokenizer as tokenizer_lib


def read_rows(path: str, delimiter: str, text_column: str,
              label_column: str) -> tuple[list[str], list[str]]:
  """(texts, label strings) of one file; errors name the file and line."""
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or '.'
    have = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    raise FileNotFoundError(
        f'Text file {path!r} does not exist (folder holds {have[:10]}). '
        'Expected PATH/<split>.tsv or .csv; set config.train_split / '
        'config.eval_split to the file names you have.')
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b'\n') + 1
    raise ValueError(
        f'{path!r} is not UTF-8 (byte {e.start}, line {line}: '
        f'{raw[e.start:e.start + 8]!r}). Re-save it as UTF-8, e.g. '
        f'`iconv -f latin1 -t utf-8`.') from e
  quoting = csv.QUOTE_NONE if delimiter == '\t' else csv.QUOTE_MINIMAL
  rows = list(csv.reader(text.splitlines(), delimiter=delimiter,
                         quoting=quoting))
  if not rows:
    raise ValueError(f'{path!r} is empty.')
  header = rows[0]
  missing = [c for c in (text_column, label_column) if c not in header]
  if missing:
    raise ValueError(
        f'{path!r} has no column(s) {missing}; its header is {header}. Set '
        'config.input.text_column / config.input.label_column.')
  ti, li = header.index(text_column), header.index(label_column)
  texts, labels = [], []
  for number, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != len(header):
      raise ValueError(f'{path!r} line {number} has {len(row)} fields, the '
                       f'header {len(header)}: {row[:4]}.')
    texts.append(row[ti])
    labels.append(row[li].strip())
  if not texts:
    raise ValueError(f'{path!r} has a header but no rows.')
  return texts, labels


def label_ids(labels: Sequence[str], class_names: Optional[Sequence[str]],
              path: str) -> tuple[np.ndarray, list[str]]:
  """Label strings -> int32 ids and the class names."""
  if all(l.lstrip('-').isdigit() for l in labels):
    ids = np.asarray([int(l) for l in labels], np.int64)
    if not class_names:
      class_names = [str(i) for i in range(int(ids.max()) + 1)]
    if ids.min() < 0 or ids.max() >= len(class_names):
      raise ValueError(
          f'{path!r} has labels {sorted(set(ids.tolist()))[:10]} outside '
          f'0..{len(class_names) - 1} (classes {list(class_names)}).')
    return ids.astype(np.int32), list(class_names)
  if not class_names:
    class_names = sorted(set(labels))
  index = {name: i for i, name in enumerate(class_names)}
  unknown = sorted(set(labels) - set(index))
  if unknown:
    raise ValueError(f'{path!r} has labels {unknown[:10]} that are not among '
                     f'the classes {list(class_names)}.')
  return np.asarray([index[l] for l in labels], np.int32), list(class_names)


def make_source(root: str, split: str, *, options: Mapping[str, Any],
                workdir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                class_names: Optional[Sequence[str]] = None
                ) -> source_lib.Source:
  """This process's share of `root/<split>.tsv`, tokenized to max_length."""
  delimiter = options.get('delimiter', '\t')
  extension = 'tsv' if delimiter == '\t' else 'csv'
  path = os.path.join(root, f'{split}.{extension}')
  texts, labels = read_rows(path, delimiter, options['text_column'],
                            options['label_column'])
  # The training split is the one built without the classes given; only it
  # may train the tokenizer, the others must reuse it.
  is_training_split = class_names is None
  ids, class_names = label_ids(
      labels, class_names or tuple(options.get('class_names') or ()), path)
  return from_texts(texts, ids, class_names, options=options, workdir=workdir,
                    is_training_split=is_training_split,
                    process_index=process_index, process_count=process_count,
                    description=f'{extension} {path}')


def from_texts(texts: Sequence[str], ids: np.ndarray,
               class_names: Sequence[str], *, options: Mapping[str, Any],
               workdir: Optional[str], is_training_split: bool,
               process_index: int, process_count: int,
               description: str) -> source_lib.Source:
  """A text source over a whole split's texts and label ids; the training
  split trains the tokenizer (or loads the workdir's), the others load it."""
  tokenizer = tokenizer_lib.load_or_train(
      workdir, options['tokenizer'], texts if is_training_split else None,
      int(options['vocab_size']))
  total = len(texts)
  texts, ids = texts[process_index::process_count], ids[process_index::process_count]
  max_length = int(options['max_length'])
  tokens = tokenizer_lib.encode(tokenizer, texts, max_length)
  truncated = float(np.mean(tokens[:, -1] != tokenizer_lib.PAD_ID))
  return source_lib.array_source(
      {'tokens': tokens, 'label': ids}, total_examples=total,
      class_names=class_names, kind='text',
      description=(f'{description} ({total} texts, {truncated:.1%} '
                   f'truncated to {max_length} tokens)'),
      model_kwargs=dict(vocab_size=tokenizer.get_vocab_size(),
                        pad_id=tokenizer_lib.PAD_ID, max_len=max_length),
      info=dict(tokenizer=tokenizer_lib.FILENAME, max_length=max_length,
                text_column=options['text_column']))

"""Text source: real SST-2 rows, a tokenizer trained on train only and saved
in the workdir, padding and truncation, errors."""

import json

import numpy as np
import pytest

from aisci import data
from aisci.data import tokenizer as tokenizer_lib

OPTIONS = dict(text_column='sentence', label_column='label',
               class_names=('negative', 'positive'), tokenizer='wordpiece',
               vocab_size=2000, max_length=32)



@pytest.fixture(scope='module')
def sources(sst2, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('text_workdir')
  train = data.make_source(f'tsv:{sst2}', 'train', options=OPTIONS,
                           workdir=str(workdir))
  dev = data.make_source(f'tsv:{sst2}', 'dev', options=OPTIONS,
                         workdir=str(workdir), class_names=train.class_names)
  return train, dev, workdir


def test_sst2_rows_labels_and_tokens(sources):
  train, dev, workdir = sources
  assert train.total_examples == 67349 and dev.total_examples == 872
  assert train.kind == 'text' and train.input_key == 'tokens'
  labels = np.asarray([int(dev.get(np.int64(i))['label']) for i in range(872)])
  np.testing.assert_array_equal(np.bincount(labels), [428, 444])
  tokens = np.asarray(dev.get(np.int64(0))['tokens'])
  assert tokens.shape == (32,) and tokens.dtype == np.int32
  assert tokens[0] == tokenizer_lib.CLS_ID
  real = tokens != tokenizer_lib.PAD_ID
  assert real[:real.sum()].all()  # padding only at the end
  assert train.model_kwargs == dict(vocab_size=2000, pad_id=0, max_len=32)
  assert (workdir / 'tokenizer.json').exists()


def test_saved_tokenizer_gives_the_same_ids(sources, sst2):
  _, dev, workdir = sources
  loaded = tokenizer_lib.load(str(workdir / 'tokenizer.json'))
  first_dev = (sst2 / 'dev.tsv').read_text().splitlines()[1].split('\t')[0]
  ids = tokenizer_lib.encode(loaded, [first_dev], 32)[0]
  np.testing.assert_array_equal(ids, np.asarray(dev.get(np.int64(0))['tokens']))
  # Words of the training split are whole tokens, not [UNK].
  assert tokenizer_lib.UNK_ID not in ids


@pytest.mark.parametrize('kind', ['wordpiece', 'bpe'])
def test_training_a_tokenizer_again_gives_the_same_ids(sst2, kind):
  # The Hugging Face trainer alone gave WordPiece different ids (and on ties
  # different tokens) from one call to the next: runs were not repeatable.
  lines = (sst2 / 'train.tsv').read_text().splitlines()[1:5001]
  texts = [line.split('\t')[0] for line in lines]
  first = tokenizer_lib.train(kind, texts, 2000)
  for _ in range(3):
    assert tokenizer_lib.train(kind, texts, 2000).to_json() == first.to_json()
  spec = json.loads(first.to_json())
  # '##' pieces are ordinary entries, not special tokens matched in raw text.
  assert [t['content'] for t in spec['added_tokens']] == list(
      tokenizer_lib.SPECIAL_TOKENS)
  assert first.get_vocab_size() == 2000
  if kind == 'wordpiece':
    ids = first.ids('unforgettable ##s')
    assert tokenizer_lib.UNK_ID not in ids
    assert first.tokenizer.decode(ids) == 'unforgettable # # s'


def test_eval_split_never_trains_a_tokenizer(sst2, tmp_path):
  with pytest.raises(FileNotFoundError, match='trained on the training split'):
    data.make_source(f'tsv:{sst2}', 'dev', options=OPTIONS,
                     workdir=str(tmp_path), class_names=('negative', 'positive'))


def test_byte_tokenizer_and_truncation(tmp_path):
  (tmp_path / 'train.csv').write_text('text,label\n"héllo, world",pos\nbad,neg\n',
                                      encoding='utf-8')
  source = data.make_source(f'csv:{tmp_path}', 'train', workdir=str(tmp_path),
                            options=dict(OPTIONS, text_column='text',
                                         class_names=(), tokenizer='byte',
                                         max_length=6))
  assert list(source.class_names) == ['neg', 'pos']  # string labels, sorted
  tokens = np.asarray(source.get(np.int64(0))['tokens'])
  expected = [tokenizer_lib.CLS_ID] + [b + 3 for b in 'héllo'.encode()][:5]
  np.testing.assert_array_equal(tokens, expected)
  assert json.loads((tmp_path / 'tokenizer.json').read_text()) == {
      'aisci_tokenizer': 'byte'}


@pytest.mark.parametrize('content, error, match', [
    (b'sentence\tlabel\ncaf\xe9\t1\n', ValueError, r'not UTF-8 .*line 2'),
    (b'text\tlabel\nfine\t1\n', ValueError, r"no column\(s\) \['sentence'\]"),
    (b'sentence\tlabel\nfine\t7\n', ValueError, r'labels \[7\] outside 0..1'),
    (b'sentence\tlabel\nfine\t1\textra\n', ValueError, 'line 2 has 3 fields'),
])
def test_bad_text_files(tmp_path, content, error, match):
  (tmp_path / 'train.tsv').write_bytes(content)
  with pytest.raises(error, match=match):
    data.make_source(f'tsv:{tmp_path}', 'train', options=OPTIONS)


def test_missing_text_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='train.tsv'):
    data.make_source(f'tsv:{tmp_path}', 'train', options=OPTIONS)

"""Text -> token ids, learned from the training split only.

Kinds (config.input.tokenizer):
  'wordpiece'  BERT-style WordPiece (lower-cased, punctuation split) with
               `config.input.vocab_size` entries, trained with Hugging Face
               `tokenizers` on the training texts.
  'bpe'        byte-level BPE (GPT-2 style, keeps case), same trainer.
  'byte'       no vocabulary: the UTF-8 bytes themselves (259 ids).
Every kind reserves id 0 for padding, 1 for [CLS] (put first in every
sequence, for `pool='cls'`) and 2 for unknown. The trained tokenizer is saved
as WORKDIR/tokenizer.json, and evaluation, resumed runs and prediction load
that file, so all see the same ids. Training is repeatable: the same texts
give the same file in every process (so two runs of one config match).
"""

import json
import os
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

PAD_ID, CLS_ID, UNK_ID = 0, 1, 2
SPECIAL_TOKENS = ('[PAD]', '[CLS]', '[UNK]')
KINDS = ('wordpiece', 'bpe', 'byte')
FILENAME = 'tokenizer.json'


class ByteTokenizer:
  """UTF-8 bytes shifted past the special ids; vocabulary-free."""
  kind = 'byte'

  def get_vocab_size(self) -> int:
    return 256 + len(SPECIAL_TOKENS)

  def ids(self, text: str) -> list[int]:
    return [b + len(SPECIAL_TOKENS) for b in text.encode('utf-8')]

  def to_json(self) -> str:
    return json.dumps({'aisci_tokenizer': 'byte'})


class HFTokenizer:
  """A Hugging Face `tokenizers.Tokenizer` without its own special tokens."""

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    self.tokenizer = tokenizer

  def get_vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size()

  def ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(
        list(texts), add_special_tokens=False)]

  def to_json(self) -> str:
    return self.tokenizer.to_str()


def train(kind: str, texts: Sequence[str], vocab_size: int):
  """A tokenizer of `kind` learned from `texts` (the training split)."""
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'wordpiece':
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    # The trainer creates each '##c' token when its hash map of words first
    # meets it, so their ids, and the merges that ties between them decide,
    # change from process to process (huggingface/tokenizers#1794). Handing
    # them over as special tokens fixes their ids (sorted) before training.
    continuing = _continuing_subwords(tokenizer, texts)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS) + continuing,
        show_progress=False)
  elif kind == 'bpe':
    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token='[UNK]'))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
  else:
    raise ValueError(f'Unknown config.input.tokenizer {kind!r}; known: {KINDS}.')
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  if kind == 'wordpiece':
    tokenizer = _without_added_tokens(tokenizer, continuing)
  if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD_ID, CLS_ID, UNK_ID]:
    raise AssertionError('special tokens did not get ids 0, 1, 2')
  return HFTokenizer(tokenizer)


def _continuing_subwords(tokenizer: tokenizers.Tokenizer,
                         texts: Sequence[str]) -> list[str]:
  """'##c' for every character c that follows another in a word, sorted."""
  # Words never span whitespace, so the distinct whitespace-separated pieces
  # give the same words as the texts, for a fraction of the time.
  pieces = set()
  for text in texts:
    pieces.update(text.split())
  words = tokenizer.pre_tokenizer.pre_tokenize_str(
      tokenizer.normalizer.normalize_str('\n'.join(sorted(pieces))))
  return sorted('##' + c for c in set(''.join([w[1:] for w, _ in words])))


def _without_added_tokens(tokenizer: tokenizers.Tokenizer,
                          tokens: Sequence[str]) -> tokenizers.Tokenizer:
  """`tokenizer` with `tokens` as ordinary vocabulary entries only, not also
  as special tokens that would be matched in raw text."""
  spec = json.loads(tokenizer.to_str())
  tokens = set(tokens)
  spec['added_tokens'] = [t for t in spec['added_tokens']
                          if t['content'] not in tokens]
  return tokenizers.Tokenizer.from_str(json.dumps(spec))


def from_json(text: str):
  if json.loads(text).get('aisci_tokenizer') == 'byte':
    return ByteTokenizer()
  return HFTokenizer(tokenizers.Tokenizer.from_str(text))


def load(path: str):
  with open(path, encoding='utf-8') as f:
    return from_json(f.read())


def load_or_train(workdir: Optional[str], kind: str,
                  texts: Optional[Sequence[str]], vocab_size: int):
  """The workdir's tokenizer if it has one, else one trained on `texts` (the
  training split; None for other splits, which only load) and saved there."""
  path = os.path.join(workdir, FILENAME) if workdir else None
  if path and os.path.exists(path):
    tokenizer = load(path)
    expected = 'byte' if kind == 'byte' else 'hf'
    found = 'byte' if isinstance(tokenizer, ByteTokenizer) else 'hf'
    if expected != found:
      raise ValueError(f'{path} holds a {found} tokenizer but '
                       f'config.input.tokenizer is {kind!r}: use a new workdir.')
    logging.info('Tokenizer: %s (%d ids).', path, tokenizer.get_vocab_size())
    return tokenizer
  if texts is None:
    if kind == 'byte':
      return ByteTokenizer()
    raise FileNotFoundError(
        f'No tokenizer {path or FILENAME!r}: it is trained on the training '
        'split, which must be read first (and with a workdir).')
  tokenizer = train(kind, texts, vocab_size)
  logging.info('Trained a %s tokenizer of %d ids on %d training texts%s.',
               kind, tokenizer.get_vocab_size(), len(texts),
               f', saved as {path}' if path else '')
  if path:
    os.makedirs(workdir, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(tokenizer.to_json())
    os.replace(tmp, path)  # atomic: a killed run never leaves half a file
  return tokenizer


def encode(tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
  """[n, max_length] int32: [CLS] then the ids, truncated, padded with 0."""
  if hasattr(tokenizer, 'batch_ids'):
    all_ids = tokenizer.batch_ids(texts)
  else:
    all_ids = [tokenizer.ids(t) for t in texts]
  out = np.full((len(texts), max_length), PAD_ID, np.int32)
  for row, ids in enumerate(all_ids):
    ids = [CLS_ID] + ids[:max_length - 1]
    out[row, :len(ids)] = ids
  return out

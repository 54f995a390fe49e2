"""Bag-of-words logistic regression on SST-2: the baseline for experiments/text.md.

Binary unigram+bigram features of the lower-cased, whitespace-split sentences
(SST-2 is already tokenized) seen at least twice in the training split; L2-
regularised logistic regression fitted by L-BFGS (scipy), strength chosen
from a small grid on a held-out 5% of the training split, then refitted on
all of it. Prints dev accuracy.

  python -m experiments.text_baseline --data=.cache/data/sst2
"""

import argparse
import collections
import csv
import os

import numpy as np
from scipy import optimize
from scipy import sparse


def read(path):
  with open(path, encoding='utf-8') as f:
    rows = list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))[1:]
  return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def ngrams(text):
  words = text.lower().split()
  return set(words) | {f'{a} {b}' for a, b in zip(words, words[1:])}


def featurize(texts, vocab):
  rows, cols = [], []
  for i, text in enumerate(texts):
    for gram in ngrams(text):
      j = vocab.get(gram)
      if j is not None:
        rows.append(i)
        cols.append(j)
  x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                        shape=(len(texts), len(vocab)))
  return sparse.hstack([x, np.ones((len(texts), 1))]).tocsr()  # bias column


def fit(x, y, l2):
  signs = 2.0 * y - 1.0

  def loss_and_grad(w):
    margins = signs * (x @ w)
    loss = np.logaddexp(0.0, -margins).sum() + 0.5 * l2 * (w[:-1] @ w[:-1])
    grad = x.T @ (-signs * 0.5 * (1.0 - np.tanh(margins / 2)))
    grad[:-1] += l2 * w[:-1]
    return loss, grad

  result = optimize.minimize(loss_and_grad, np.zeros(x.shape[1]), jac=True,
                             method='L-BFGS-B', options=dict(maxiter=500))
  return result.x


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data', default='.cache/data/sst2')
  args = parser.parse_args()
  train_texts, train_y = read(os.path.join(args.data, 'train.tsv'))
  dev_texts, dev_y = read(os.path.join(args.data, 'dev.tsv'))
  counts = collections.Counter(g for t in train_texts for g in ngrams(t))
  vocab = {g: i for i, g in enumerate(sorted(g for g, c in counts.items() if c >= 2))}
  x_train, x_dev = featurize(train_texts, vocab), featurize(dev_texts, vocab)
  rng = np.random.default_rng(0)
  held = rng.random(len(train_y)) < 0.05
  scores = {}
  for l2 in (0.3, 1.0, 3.0, 10.0):
    w = fit(x_train[~held], train_y[~held], l2)
    scores[l2] = float(((x_train[held] @ w > 0) == train_y[held]).mean())
  l2 = max(scores, key=scores.get)
  w = fit(x_train, train_y, l2)
  accuracy = float(((x_dev @ w > 0) == dev_y).mean())
  print(f'features {len(vocab)}, held-out accuracy by L2 {scores}, chosen {l2}')
  print(f'bag-of-words logistic regression: SST-2 dev accuracy {accuracy:.4f} '
        f'({int(round(accuracy * len(dev_y)))}/{len(dev_y)})')


if __name__ == '__main__':
  main()

"""Judging a classifier: accuracy, macro-F1, the confusion matrix, and the baselines a number must beat.

- **accuracy**: the share of test texts whose label is predicted;
- **macro-F1**: per label, F1 = 2 precision recall / (precision + recall), then
  the mean over labels, so a rare label counts as much as a common one (a
  classifier that always answers the common label scores well on accuracy
  and badly here);
- the **confusion matrix**: row = the true label, column = the predicted one;
- the **majority-class baseline**: always the most common training label;
- a **bag-of-words logistic regression**, the classifier one reaches for
  first: each text as counts of its (lower-cased) words, log(1 + count),
  over the most frequent ``vocabulary`` training words, and a softmax
  regression trained by plain full-batch gradient descent with a little L2
  (written here in NumPy, no autograd: the gradient of the mean
  cross-entropy in W is X^T (softmax(X W) - onehot) / n).
"""

import re

import numpy as np

WORD = re.compile(r"[a-z_][a-z0-9_]+")


def accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(predicted == true))


def confusion_matrix(predicted: np.ndarray, true: np.ndarray, n_labels: int) -> np.ndarray:
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def macro_f1(predicted: np.ndarray, true: np.ndarray, n_labels: int) -> float:
    matrix = confusion_matrix(predicted, true, n_labels)
    hits = np.diag(matrix).astype(np.float64)
    predicted_counts, true_counts = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(predicted_counts + true_counts > 0, 2 * hits / (predicted_counts + true_counts), 0.0)
    return float(f1.mean())


def majority_class(train_labels: np.ndarray, n_test: int) -> np.ndarray:
    return np.full(n_test, np.bincount(train_labels).argmax())


def bag_of_words_predictions(train_texts, train_labels, test_texts, n_labels, vocabulary=2000, steps=200,
                             lr=1.0, l2=1e-4) -> np.ndarray:
    """Test predictions of a softmax regression on log(1 + word counts)."""
    counts = {}
    for text in train_texts:
        for word in WORD.findall(text.lower()):
            counts[word] = counts.get(word, 0) + 1
    words = {word: i for i, word in enumerate(sorted(counts, key=lambda w: (-counts[w], w))[:vocabulary])}

    def features(texts):
        x = np.zeros((len(texts), len(words) + 1), dtype=np.float32)
        x[:, -1] = 1.0  # the bias
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                if word in words:
                    x[row, words[word]] += 1
        np.log1p(x[:, :-1], out=x[:, :-1])
        return x

    x, onehot = features(train_texts), np.eye(n_labels, dtype=np.float32)[train_labels]
    weights = np.zeros((x.shape[1], n_labels), dtype=np.float32)
    for _ in range(steps):
        scores = x @ weights
        scores -= scores.max(axis=1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=1, keepdims=True)
        weights -= lr * (x.T @ (probs - onehot) / len(x) + l2 * weights)
    return (features(test_texts) @ weights).argmax(axis=1)


def report(name: str, predicted: np.ndarray, true: np.ndarray, n_labels: int) -> dict:
    return {"name": name, "accuracy": accuracy(predicted, true), "macro_f1": macro_f1(predicted, true, n_labels)}

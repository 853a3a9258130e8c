"""Judging a classifier and a text generator: accuracy, macro-F1, ROUGE-L, exact match, and the baselines to beat.

A classifier:

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

A generated text (a docstring's first sentence, a summary) against its reference:

- **ROUGE-L** (Lin 2004): both texts as lower-cased words (runs of letters
  and digits), L the length of their longest common subsequence; precision
  L / |prediction|, recall L / |reference|, and their harmonic mean
  F = 2 P R / (P + R), averaged over the pairs.  Order matters, adjacency
  does not: "return the size" and "return size of the chunk" share
  "return size";
- **exact match**: the share of predictions equal to their reference once
  runs of white space are one space and the ends are trimmed;
- the **name baseline** for code: the function's name split into its words
  (``get_source_segment``, ``getSourceSegment`` -> "Get source segment."),
  what a reader guesses from the signature alone.
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


# --- generated text -----------------------------------------------------------------------------
ROUGE_WORD = re.compile(r"[a-z0-9]+")


def longest_common_subsequence(a: list, b: list) -> int:
    """The length of the longest common subsequence, by dynamic programming one row at a time (O(|a| |b|))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one prediction against its reference (0 when either has no word)."""
    predicted, wanted = ROUGE_WORD.findall(prediction.lower()), ROUGE_WORD.findall(reference.lower())
    common = longest_common_subsequence(predicted, wanted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    return " ".join(prediction.split()) == " ".join(reference.split())


def text_report(name: str, predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-L and the exact-match share of ``predictions`` against ``references``."""
    return {"name": name,
            "rouge_l": float(np.mean([rouge_l(p, r) for p, r in zip(predictions, references)])),
            "exact_match": float(np.mean([exact_match(p, r) for p, r in zip(predictions, references)]))}


DEFINED_NAME = re.compile(r"\bdef\s+([A-Za-z_]\w*)")
NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_baseline(source: str) -> str:
    """The first function name defined in ``source``, as a sentence of its words; else the source's first 8 words."""
    found = DEFINED_NAME.search(source)
    words = NAME_WORD.findall(found.group(1)) if found else []
    if not words:
        return " ".join(source.split()[:8])
    sentence = " ".join(word if word.isupper() and len(word) > 1 else word.lower() for word in words)  # (acronyms kept)
    return sentence[:1].upper() + sentence[1:] + "."

"""ROUGE-L, exact match and the name baseline on hand-made cases."""

import pytest

from npllm.training.evaluation import exact_match, longest_common_subsequence, name_baseline, rouge_l, text_report


def test_longest_common_subsequence_by_hand():
    assert longest_common_subsequence(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example: BCBA
    assert longest_common_subsequence([], ["a"]) == 0
    assert longest_common_subsequence(["a", "b"], ["a", "b"]) == 2


def test_rouge_l_by_hand():
    # prediction 3 words, reference 5 words, LCS "return size" = 2: P 2/3, R 2/5, F = 2PR/(P+R) = 0.5
    assert rouge_l("Return the size", "return size of the chunk") == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    assert rouge_l("Return the size.", "return THE size") == 1.0  # case and punctuation do not count
    assert rouge_l("", "anything") == 0.0 and rouge_l("a b", "c d") == 0.0
    assert rouge_l("b a", "a b") == 0.5  # order matters: LCS 1


def test_exact_match_ignores_runs_of_white_space_only():
    assert exact_match(" Return  the size. ", "Return the size.")
    assert not exact_match("Return the size", "Return the size.")
    assert not exact_match("return the size.", "Return the size.")


def test_text_report_averages_over_pairs():
    report = text_report("model", ["a b", "x"], ["a b", "y"])
    assert report == {"name": "model", "rouge_l": 0.5, "exact_match": 0.5}


@pytest.mark.parametrize("source, expected", [
    ("def get_source_segment(node):\n    return node", "Get source segment."),
    ("async def fetchURLQuickly(self): pass", "Fetch URL quickly."),
    ("def __init__(self, x):\n    self.x = x", "Init."),
    ("class A:\n    def parse2(self): pass", "Parse 2."),
    ("x = 1 + 2  # no function here at all", "x = 1 + 2 # no function"),
])
def test_the_name_baseline(source, expected):
    assert name_baseline(source) == expected

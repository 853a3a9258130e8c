"""npllm bench profile: every kernel's row, stopwatches removed afterwards, PyTorch's column beside ours."""

import json

import pytest

from npllm.bench import profile
from npllm.cli import main
from npllm.functional import activations
from npllm.tensor import Function


def profile_summary(capsys, *flags):
    """Run ``npllm bench profile`` on tiny for one step; return its printed lines and its JSON summary."""
    assert main(["bench", "profile", "--preset", "tiny", "--steps", "1", "--warmup", "1", "--repeats", "1", "--json",
                 *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    return lines, json.loads(lines[-1])


def originals():
    return {cls: (cls.__dict__.get("forward"), cls.__dict__.get("backward")) for cls in profile._all_subclasses(Function)}


@pytest.mark.bench
def test_profile_times_each_kernel_and_leaves_the_ops_as_they_were(capsys):
    before, pieces = originals(), dict(activations.PIECES)
    lines, summary = profile_summary(capsys)
    assert originals() == before and activations.PIECES == pieces  # every stopwatch taken off again
    ours = summary["npllm"]
    for row in (profile.ROWS["FusedLayerNorm"], profile.ROWS["FusedLinearGELU"], profile.ROWS["FusedCrossEntropy"],
                profile.ROWS["FusedSelfAttention"]):
        assert ours[f"{row} [forward]"] > 0 and ours[f"{row} [backward]"] > 0, row
    for row in (profile.ENGINE["AdamW"], profile.ENGINE["join"], profile.ENGINE["split"]):
        assert ours[f"{row} [step]"] > 0, row
    assert ours[f"{profile.PIECES['gelu']} [forward]"] > 0  # the pieces inside linear_gelu
    assert summary["plain"]["npllm step"] > 0 and summary["plain"]["npllm products"] > 0  # (timings: no order asserted)
    assert any(line.startswith("  npllm: step") for line in lines)


@pytest.mark.bench
@pytest.mark.parity
def test_profile_puts_pytorchs_ops_in_the_same_rows(capsys):
    pytest.importorskip("torch")
    _, summary = profile_summary(capsys, "--compare-torch")
    theirs = summary["torch"]
    for row in ("FusedLayerNorm", "FusedGELU", "FusedCrossEntropy", "FusedSelfAttention"):
        assert theirs[f"{profile.ROWS[row]} [forward]"] > 0 and theirs[f"{profile.ROWS[row]} [backward]"] > 0, row
    assert theirs[f"{profile.ENGINE['AdamW']} [step]"] > 0
    assert "rest ratio" in summary["plain"]  # a ratio of two timings: printed, never asserted (it can even be < 0)


@pytest.mark.bench
@pytest.mark.parity
def test_profile_of_bert_has_its_own_kernels_in_both_columns(capsys):
    pytest.importorskip("torch")
    lines, summary = profile_summary(capsys, "--model", "bert", "--compare-torch")
    assert lines[0].startswith("bert preset tiny") and summary["model"] == "bert"
    ours, theirs = summary["npllm"], summary["torch"]
    for row in ("FusedLinearAddLayerNorm", "FusedLinearGELU", "FusedSelfAttention"):  # BERT's post-LN and erf GELU
        assert ours[f"{profile.ROWS[row]} [forward]"] > 0 and ours[f"{profile.ROWS[row]} [backward]"] > 0, row
    for row in ("FusedLayerNorm", "FusedGELU", "FusedCrossEntropy"):
        assert theirs[f"{profile.ROWS[row]} [forward]"] > 0, row
    assert summary["plain"]["npllm products"] > 0 and summary["plain"]["torch products"] > 0

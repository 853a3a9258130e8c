"""npllm.plot: each picture is a PNG of the promised size, not blank, and shows the run's (or model's) own numbers.

What a figure plots is read back from the figure itself (its lines, images
and bars) and compared with the data it was drawn from: metrics.jsonl, the
attention weights the model records, the counts given.  Without matplotlib
these tests skip, except the one that checks the message a user then sees.
"""

import importlib.util
import json
import struct
import sys

import numpy as np
import pytest

from npllm.cli import main
from npllm.plot import DPI, MISSING_MATPLOTLIB
from npllm.training import pretrain, pretrain_bert

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (pip install 'npllm[plot]')")
TINY = dict(vocab_size=300, n_layer=2, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
            warmup_steps=2, max_steps=6, eval_interval=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny GPT runs (different peak learning rates) and a tiny BERT run, trained once for the module."""
    from tests.conftest import TINY_TEXT

    folder = tmp_path_factory.mktemp("runs")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    patch = pytest.MonkeyPatch()
    patch.setenv("NPLLM_CACHE", str(folder / "cache"))
    made = {}
    for name, lr in (("fast", 3e-3), ("slow", 1e-3)):
        config = pretrain.TrainConfig(**TINY, lr=lr, min_lr=lr / 10, data=str(corpus), out_dir=str(folder / name))
        made[name] = pretrain.train(config, progress=False, log=lambda *_: None).out_dir
    bert = pretrain_bert.BERTTrainConfig(**{**TINY, "max_steps": 2}, data=str(corpus), out_dir=str(folder / "bert"))
    made["bert"] = pretrain_bert.train(bert, progress=False, log=lambda *_: None).out_dir
    yield made
    patch.undo()


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, checking the signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def assert_a_picture(path, size):
    """``path`` is a PNG of ``size`` pixels with something drawn on it (many colours, much of it not white)."""
    from matplotlib.image import imread

    assert path.is_file() and png_size(path) == size
    pixels = imread(path)[..., :3]  # (height, width, RGB) in [0, 1]
    assert pixels.shape[:2] == size[::-1]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert np.mean(np.any(pixels < 0.9, axis=-1)) > 0.02


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def lines_by_label(axes):
    return {line.get_label(): line for line in axes.lines}


@needs_matplotlib
def test_npllm_plot_overlays_the_runs_with_their_own_numbers(runs, tmp_path, capsys):
    from npllm.plot.runs import plot_runs

    out = tmp_path / "curves.png"
    assert main(["plot", str(runs["fast"]), str(runs["slow"]), "--out", str(out), "--label", "fast", "--label",
                 "slow"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert_a_picture(out, (11 * DPI, int(7.5 * DPI)))

    by_step, by_seen, lr, grad_norm = plot_runs([runs["fast"], runs["slow"]], labels=["fast", "slow"]).axes[:4]
    for name in ("fast", "slow"):
        records = metrics(runs[name])
        evaluated = [r for r in records if "val_loss" in r]
        steps = [r["step"] for r in records]
        seen = np.cumsum([r["tokens"] for r in records])
        assert seen[-1] == 6 * 4 * 16  # steps x windows x tokens
        train_line, val_line = (lines_by_label(by_step)[f"{name}: {part}"] for part in ("train", "validation"))
        np.testing.assert_array_equal(train_line.get_xdata(), steps)
        np.testing.assert_array_equal(train_line.get_ydata(), [r["train_loss"] for r in records])
        np.testing.assert_array_equal(val_line.get_xdata(), [3, 6])
        np.testing.assert_array_equal(val_line.get_ydata(), [r["val_loss"] for r in evaluated])
        np.testing.assert_array_equal(lines_by_label(by_seen)[f"{name}: train"].get_xdata(), seen)
        np.testing.assert_array_equal(lines_by_label(by_seen)[f"{name}: validation"].get_xdata(), seen[[2, 5]])
        np.testing.assert_array_equal(lines_by_label(lr)[name].get_ydata(), [r["lr"] for r in records])
        np.testing.assert_array_equal(lines_by_label(grad_norm)[name].get_ydata(), [r["grad_norm"] for r in records])
    assert max(lines_by_label(lr)["fast"].get_ydata()) == pytest.approx(3e-3)  # the two runs are not the same line
    assert by_seen.get_xlabel() == "tokens seen"


@needs_matplotlib
def test_a_log_without_gradient_norms_or_counts_says_so_in_its_panels(runs, tmp_path):
    from npllm.plot.runs import plot_runs

    old = tmp_path / "old-run"
    old.mkdir()
    kept = ("step", "train_loss", "lr", "val_loss")  # what the loop logged before it counted and measured the norm
    (old / "metrics.jsonl").write_text("".join(json.dumps({k: r[k] for k in kept if k in r}) + "\n"
                                               for r in metrics(runs["fast"])))
    by_step, by_seen, _, grad_norm = plot_runs([old], tmp_path / "old.png").axes[:4]
    assert len(by_step.lines) == 2 and not by_seen.lines and not grad_norm.lines
    assert "not in these logs" in by_seen.get_title() and "not in these logs" in grad_norm.get_title()


@needs_matplotlib
def test_npllm_plot_refuses_what_is_not_a_log_in_one_line(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n{"step": 2,\n')
    cases = [([str(tmp_path / "nowhere")], "no training log here"),
             ([str(broken)], "metrics.jsonl, line 2: not a JSON record"),
             ([str(runs["fast"]), "--label", "a", "--label", "b"], "2 labels for 1 runs (--label once per run")]
    for arguments, message in cases:
        assert main(["plot", *arguments, "--out", str(tmp_path / "x.png")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert main(["plot", str(runs["fast"]), "--out", str(tmp_path / "x.unknown")]) == 2
    assert "cannot write this kind of picture" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@needs_matplotlib
def test_npllm_attention_draws_every_layer_and_head_of_a_gpt(runs, tmp_path, capsys):
    from npllm.plot.attention import (
        attention_weights,
        load_model,
        plot_prompt_attention,
    )

    out = tmp_path / "attention.png"
    assert main(["attention", "--checkpoint", str(runs["fast"]), "--prompt", "the cat sat", "--out", str(out)]) == 0
    assert "2 layers x 2 heads over" in capsys.readouterr().out
    assert_a_picture(out, (int((2.4 * 2 + 1.2) * DPI), int((2.4 * 2 + 0.8) * DPI)))

    figure, _ = plot_prompt_attention(runs["fast"], "the cat sat")
    model, tokenizer = load_model(runs["fast"])
    ids = tokenizer.encode("the cat sat")
    expected = attention_weights(model, ids)
    maps = [axes for axes in figure.axes if axes.images]
    assert [a.get_title() for a in maps] == [f"h.{layer}.attn head {head}" for layer in (0, 1) for head in (0, 1)]
    for axes, (name, head) in zip(maps, [(f"h.{layer}.attn", head) for layer in (0, 1) for head in (0, 1)]):
        shown = np.asarray(axes.images[0].get_array())
        np.testing.assert_array_equal(shown, expected[name][head])
        np.testing.assert_allclose(shown.sum(axis=1), 1.0, rtol=1e-5)
        assert np.all(np.triu(shown, k=1) == 0)  # a GPT's query never reads the future
    labels = [tick.get_text() for tick in maps[0].get_xticklabels()]
    assert "".join(labels).replace("·", " ") == "the cat sat"


@needs_matplotlib
def test_npllm_attention_reads_a_bert_run_with_cls_and_sep(runs, tmp_path, capsys):
    from npllm.plot.attention import plot_prompt_attention

    figure, weights = plot_prompt_attention(runs["bert"], "the dog", tmp_path / "bert.png", layers=[1])
    assert list(weights) == ["bert.encoder.layer.1.attention.self"]
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels[0] == "[CLS]" and labels[-1] == "[SEP]"
    assert np.any(np.triu(weights["bert.encoder.layer.1.attention.self"][0], k=1) > 0)  # bidirectional: reads ahead too
    assert_a_picture(tmp_path / "bert.png", (int((2.4 * 2 + 1.2) * DPI), int((2.4 + 0.8) * DPI)))
    for arguments, message in (
            (["--prompt", "the " * 40], "--prompt is 43 tokens, more than the model's context of 16"),  # 40 words, [CLS] and [SEP]
            (["--prompt", "the", "--layer", "2"], "--layer 2 is not one of the model's 2 layers (0 to 1)")):
        assert main(["attention", "--checkpoint", str(runs["bert"]), *arguments, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err


@needs_matplotlib
def test_the_histogram_and_the_confusion_matrix_show_the_counts_given(tmp_path):
    from npllm.plot.charts import confusion_matrix, histogram

    lengths = {"vocabulary": [1, 1, 2, 3, 3, 3], "text": [1, 1, 1, 2]}
    figure = histogram(lengths, "bytes per token", tmp_path / "lengths.png")
    assert_a_picture(tmp_path / "lengths.png", (8 * DPI, int(4.5 * DPI)))
    bars = figure.axes[0].containers
    np.testing.assert_allclose([bar.get_height() for bar in bars[0]], [2 / 6, 1 / 6, 3 / 6])
    np.testing.assert_allclose([bar.get_height() for bar in bars[1]], [3 / 4, 1 / 4, 0])

    matrix = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    figure = confusion_matrix(matrix, ["ant", "bee", "cat"], tmp_path / "confusion.png")
    side = 2.0 + 0.55 * 3
    assert_a_picture(tmp_path / "confusion.png", (int(round((side + 1.5) * DPI)), int(round(side * DPI))))
    axes = figure.axes[0]
    np.testing.assert_array_equal(np.asarray(axes.images[0].get_array()), matrix)
    assert sorted(int(text.get_text()) for text in axes.texts) == sorted(matrix.ravel())


def test_without_matplotlib_a_picture_is_one_line_naming_the_extra(runs, tmp_path, capsys, monkeypatch):
    for name in [module for module in sys.modules if module == "matplotlib" or module.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    from npllm.plot import matplotlib_available

    assert not matplotlib_available()
    assert main(["plot", str(runs["fast"]), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"npllm plot: error: {MISSING_MATPLOTLIB}\n"
    assert "pip install 'npllm[plot]'" in MISSING_MATPLOTLIB
    assert not (tmp_path / "x.png").exists()


@needs_matplotlib
def test_npllm_plot_draws_the_panels_asked_for(runs, tmp_path):
    out = tmp_path / "loss.png"
    assert main(["plot", str(runs["fast"]), "--panel", "loss", "--out", str(out)]) == 0
    assert_a_picture(out, (int(5.5 * DPI), int(3.75 * DPI)))
    from npllm.plot.runs import plot_runs

    figure = plot_runs([runs["fast"]], panels=("lr", "loss"))
    assert [axes.get_title() for axes in figure.axes] == ["loss", "learning-rate schedule"]  # in PANELS' order


@needs_matplotlib
def test_npllm_attention_reads_a_hugging_face_gpt2_folder(tmp_path, capsys):
    from npllm import save_pretrained
    from npllm.models import GPT, GPTConfig
    from npllm.tokenizer import BPETokenizer
    from tests.conftest import TINY_TEXT

    tokenizer = BPETokenizer.train(TINY_TEXT, vocab_size=280, special_tokens={"<|endoftext|>": 279})
    save_pretrained(GPT(GPTConfig(vocab_size=280, context_length=16, n_layer=1, n_head=2, n_embd=8)), tokenizer,
                    tmp_path / "gpt2")
    out = tmp_path / "hf.png"
    assert main(["attention", "--checkpoint", str(tmp_path / "gpt2"), "--prompt", "the dog", "--out", str(out)]) == 0
    assert "1 layer x 2 heads over" in capsys.readouterr().out
    assert_a_picture(out, (int((2.4 * 2 + 1.2) * DPI), int((2.4 + 0.8) * DPI)))

"""Classification fine-tuning: the data, the classifier, the metrics and the recipe keep their promises.

The embedded stdlib-topics split never puts one source file on both sides;
user files are read with one-line errors; the classifier reads each text's
last real token, so padding changes nothing; each choice of what to train
trains exactly that; a run resumes bit for bit and refuses another base.
How *well* it classifies is a measurement (the README's table).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from npllm.data.labelled import STDLIB_TOPICS, load_labelled, padded_batch, stdlib_topics
from npllm.data.sources import DataSourceError
from npllm.errors import SettingError
from npllm.models import GPT, GPTConfig, SequenceClassifier
from npllm.training import evaluation
from npllm.training.finetune import ClassifyConfig, classify, resume
from npllm.training.pretrain import TrainConfig, train


def silent(*_):
    pass


def test_stdlib_topics_has_every_label_on_both_sides_and_no_text_on_both():
    data = stdlib_topics()
    assert data.labels == list(STDLIB_TOPICS)
    for labels in (data.train_labels, data.test_labels):
        assert (np.bincount(labels, minlength=len(STDLIB_TOPICS)) > 0).all()
    assert len(data.test_labels) < len(data.train_labels)
    assert data.counts().splitlines()[0].startswith(f"train {len(data.train_labels):,}: asyncio ")


def test_stdlib_topics_splits_by_source_file(tmp_path):
    """A package of three files whose docstrings are told apart by file: no file's docstrings on both sides."""
    for package in STDLIB_TOPICS:
        for index in range(3):
            path = tmp_path / package / f"m{index}.py"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(f'def f{k}():\n    """{package} file {index} docstring number {k}."""\n'
                                    for k in range(5)))
    data = stdlib_topics(root=tmp_path)
    files_in = lambda texts: {text.split(" docstring")[0] for text in texts}  # noqa: E731
    assert not files_in(data.train_texts) & files_in(data.test_texts)
    assert len(data.test_texts) == len(STDLIB_TOPICS) * 5  # one file of three: a fifth or more, at most half


def test_a_user_file_of_text_and_label(tmp_path):
    rows = [{"text": f"message number {i} about {'spam' if i % 3 else 'ham'}", "label": "spam" if i % 3 else "ham"}
            for i in range(30)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "data.csv").write_text("text,label\n" + "\n".join(f"{r['text']},{r['label']}" for r in rows))
    for name in ("data.jsonl", "data.csv"):
        data = load_labelled(str(tmp_path / name), seed=0)
        assert data.labels == ["ham", "spam"] and len(data.train_texts) + len(data.test_texts) == 30


def test_a_jsonl_record_may_hold_a_line_separator_inside_its_text(tmp_path):
    rows = [{"text": f"line\u2028separated\x0c{i}", "label": "ab"[i % 2]} for i in range(20)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows))
    data = load_labelled(str(tmp_path / "data.jsonl"), seed=0)
    assert sorted(data.train_texts + data.test_texts) == sorted(row["text"] for row in rows)


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "class": "x"}', "line 1: no field 'label'"),
    ('{"text": " ", "label": "x"}', "line 1: the text is empty"),
    ("not json", "line 1: not a JSON record"),
], ids=["no label field", "empty text", "not JSON"])
def test_a_bad_user_file_is_one_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DataSourceError, match=message):
        load_labelled(str(tmp_path / "bad.jsonl"))


def test_a_label_only_held_out_is_refused(tmp_path):
    rows = [{"text": f"t{i}", "label": "common"} for i in range(9)] + [{"text": "rare one", "label": "rare"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    for seed in range(20):  # some seed holds the one rare row out
        try:
            load_labelled(str(tmp_path / "d.jsonl"), seed=seed)
        except DataSourceError as error:
            assert "label 'rare' is only among the held-out rows" in str(error)
            return
    pytest.fail("no seed held the rare row out")


def test_the_classifier_reads_the_last_real_token_so_padding_changes_nothing():
    model = SequenceClassifier(GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, n_embd=8,
                                             dtype="float64")), n_labels=3)
    short, long = [3, 4, 5], [1, 2, 3, 4, 5, 6]
    alone = model(np.array([short]), np.array([3])).data
    for pad in (0, 19):
        batch = padded_batch([short, long], np.array([0, 1]), pad_id=pad)
        np.testing.assert_allclose(model(batch["input_ids"], batch["lengths"]).data[0], alone[0], rtol=1e-12)


def test_metrics_on_a_hand_made_case():
    true, predicted = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 1])
    assert evaluation.accuracy(predicted, true) == 0.6
    assert evaluation.confusion_matrix(predicted, true, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    # F1: label 0: 2*1/(1+2) = 2/3; label 1: 2*2/(4+2) = 2/3; label 2: 0
    assert evaluation.macro_f1(predicted, true, 3) == pytest.approx(4 / 9)


def test_the_bag_of_words_baseline_learns_words():
    texts = [f"apple banana {i}" for i in range(20)] + [f"cherry durian {i}" for i in range(20)]
    labels = np.array([0] * 20 + [1] * 20)
    assert (evaluation.bag_of_words_predictions(texts, labels, ["banana pie", "durian pie"], 2) == [0, 1]).all()


@pytest.fixture
def topics_file(tmp_path):
    rows = [{"text": f"{word} {word} item {i}", "label": word} for word in ("red", "green", "blue") for i in range(12)]
    path = tmp_path / "topics.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return str(path)


def config(base, topics_file, tmp_path, name="cls", **changes):
    settings = {**dict(max_steps=4, eval_interval=2, batch_size=4, warmup_steps=1), **changes}
    return ClassifyConfig(checkpoint=base, data=topics_file, out_dir=str(tmp_path / name), **settings)


@pytest.mark.parametrize("trained, expected", [
    (dict(train="all"), lambda name: True),
    (dict(train="last-blocks", last_blocks=1), lambda name: name.startswith(("transformer.h.1.", "transformer.ln_f.",
                                                                             "score."))),
    (dict(train="lora", lora_rank=2), lambda name: name.endswith(("lora_A", "lora_B")) or name.startswith("score.")),
], ids=["all", "last-blocks", "lora"])
def test_each_choice_trains_exactly_what_it_says_and_reports(base, topics_file, tmp_path, trained, expected):
    run = classify(config(base, topics_file, tmp_path, **trained), progress=False, log=silent)
    assert {name for name, p in run.model.named_parameters() if p.requires_grad} == \
        {name for name, _ in run.model.named_parameters() if expected(name)}
    report = json.loads((Path(run.out_dir) / "report.json").read_text())
    assert [row["name"] for row in report["results"]][:2] == ["this classifier", "majority class"]
    assert np.array(report["confusion_matrix"]).sum() == len(run.test_labels)
    trained_count = sum(p.size for p in run.model.parameters() if p.requires_grad)
    assert (report["trained_parameters"], report["parameters"]) == (trained_count, run.model.num_parameters())
    assert report["epochs"] == pytest.approx(4 * 4 / len(run.data.train_labels))  # 4 steps of 4 texts
    assert report["seconds_per_epoch"] > 0


def test_a_fine_tuning_run_resumes_bit_for_bit_and_refuses_another_base(base, topics_file, tmp_path, tiny_corpus):
    def metrics(out_dir):
        lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"} for line in lines]

    whole = classify(config(base, topics_file, tmp_path, name="whole"), progress=False, log=silent)
    classify(config(base, topics_file, tmp_path, name="halves", max_steps=2), progress=False, log=silent)
    resume(tmp_path / "halves", {"max_steps": 4}, progress=False, log=silent)
    assert metrics(tmp_path / "halves") == metrics(whole.out_dir)
    train(TrainConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
                      max_steps=2, seed=5, data=str(tiny_corpus), out_dir=str(tmp_path / "other")),
          progress=False, log=silent)
    import shutil
    shutil.rmtree(Path(base) / "checkpoint")
    shutil.copytree(tmp_path / "other" / "checkpoint", Path(base) / "checkpoint")
    with pytest.raises(SettingError, match="not the model this run was fine-tuned from"):
        resume(tmp_path / "halves", {"max_steps": 6}, progress=False, log=silent)


@pytest.mark.parametrize("settings, message", [
    (dict(train="some"), "`train` must be one of all, last-blocks, lora"),
    (dict(lora_rank=0), "`lora_rank` must be at least 1"),
    (dict(lora_alpha=0.0), "`lora_alpha` must be a positive number"),
    (dict(init="zeros"), "`init` must be one of pretrained, random"),
], ids=["train", "rank", "alpha", "init"])
def test_bad_fine_tuning_settings_are_refused(settings, message):
    with pytest.raises(SettingError, match=message):
        ClassifyConfig(**settings)


def test_more_last_blocks_than_the_model_has_is_refused_before_the_data_is_read(base, topics_file, tmp_path,
                                                                                monkeypatch):
    import npllm.training.finetune as finetune

    monkeypatch.setattr(finetune, "load_labelled", lambda *args, **kwargs: pytest.fail("the data was read"))
    with pytest.raises(SettingError, match="`last_blocks` 5: the model has 2 blocks"):
        classify(config(base, topics_file, tmp_path, train="last-blocks", last_blocks=5), progress=False, log=silent)


def test_a_class_without_a_training_example_is_refused(tmp_path):
    """A package whose files hold no docstring: its label would have nothing to learn from."""
    for package in STDLIB_TOPICS:
        for index in range(3):
            path = tmp_path / package / f"m{index}.py"
            path.parent.mkdir(exist_ok=True)
            body = "x = 1\n" if package == "http" else f'def f():\n    """{package} file {index}, a docstring."""\n'
            path.write_text(body)
    with pytest.raises(DataSourceError, match="the label 'http' has no training example"):
        stdlib_topics(root=tmp_path)

"""Classification with a BERT: the pooled [CLS] classifier equals transformers', and fine-tuning reads BERT bases.

A run of ``npllm train --model bert`` (a masked-LM checkpoint, without a
pooler: it starts fresh) and a Hugging Face BERT folder with its WordPiece
vocabulary are both bases ``npllm finetune classify`` trains on, each choice
of what is trained training exactly that.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import npllm
from npllm.cli import main
from npllm.data.labelled import padded_batch
from npllm.models import BERT, BERTConfig, BERTSequenceClassifier
from npllm.training.finetune import ClassifyConfig, classify
from tests.training.test_pretrain_bert import tiny_bert_command


def silent(*_):
    pass


def test_padding_changes_nothing_the_bert_classifier_reads():
    bert = BERT(BERTConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, n_embd=8, n_inner=8, dropout=0.0,
                           attention_dropout=0.0, dtype="float64"))
    model = BERTSequenceClassifier(bert, n_labels=3).eval()
    short, long = [2, 4, 5, 3], [2, 1, 2, 3, 4, 5, 6, 3]
    alone = model(np.array([short]), np.array([4])).data
    for pad in (0, 19):
        batch = padded_batch([short, long], np.array([0, 1]), pad_id=pad)
        np.testing.assert_allclose(model(batch["input_ids"], batch["lengths"]).data[0], alone[0], rtol=1e-12)


def hugging_face_classifier(folder, labels=3):
    """A tiny random ``BertForSequenceClassification`` (float64) saved in ``folder``, with a WordPiece vocabulary."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "green", "blue", "item", *map(str, range(10)),
             *(f"##{d}" for d in range(10))]
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=12, max_position_embeddings=16, num_labels=labels)
    reference = transformers.BertForSequenceClassification(config).double().eval()
    reference.save_pretrained(folder)
    (Path(folder) / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return torch, reference


@pytest.mark.parity
def test_the_pooled_cls_classifier_gives_transformers_logits(tmp_path):
    torch, reference = hugging_face_classifier(tmp_path)
    bert, _ = npllm.load_pretrained(tmp_path)  # the encoder and its pooler, under bert. (the head is left unread)
    model = BERTSequenceClassifier(bert, n_labels=3).eval()
    theirs = dict(reference.named_parameters())
    model.classifier.weight.data[...] = theirs["classifier.weight"].detach().numpy().T  # (out, in) -> (in, out)
    model.classifier.bias.data[...] = theirs["classifier.bias"].detach().numpy()
    assert set(dict(model.named_parameters())) == set(theirs)  # the same names, one to one
    batch = padded_batch([[2, 5, 6, 3], [2, 7, 8, 9, 10, 3], [2, 3]], np.array([0, 1, 2]), pad_id=0)
    mask = np.arange(batch["input_ids"].shape[1])[None, :] < batch["lengths"][:, None]
    with torch.no_grad():
        expected = reference(torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(mask.astype(np.int64)))
    np.testing.assert_allclose(model(batch["input_ids"], batch["lengths"]).data, expected.logits.numpy(),
                               rtol=0, atol=1e-12)


@pytest.fixture
def colours(tmp_path):
    rows = [{"text": f"{word} {word} item {i}", "label": word} for word in ("red", "green", "blue") for i in range(12)]
    path = tmp_path / "colours.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)))
    return str(path)


@pytest.fixture
def bert_run(tiny_corpus, tmp_path):
    assert main(tiny_bert_command(tiny_corpus, tmp_path / "bert", steps=2)) == 0
    return str(tmp_path / "bert")


@pytest.mark.parametrize("trained, expected", [
    (dict(train="all"), lambda name: True),
    (dict(train="last-blocks", last_blocks=1), lambda name: name.startswith(("bert.encoder.layer.0.", "bert.pooler.",
                                                                             "classifier."))),
    (dict(train="lora", lora_rank=2), lambda name: name.endswith(("lora_A", "lora_B")) or name.startswith("classifier.")),
], ids=["all", "last-blocks", "lora"])
def test_a_bert_run_is_fine_tuned_from_its_pooled_cls(bert_run, colours, tmp_path, trained, expected):
    run = classify(ClassifyConfig(checkpoint=bert_run, data=colours, out_dir=str(tmp_path / "cls"), max_steps=2,
                                  eval_interval=2, batch_size=4, warmup_steps=1, **trained), progress=False, log=silent)
    assert isinstance(run.model, BERTSequenceClassifier) and run.model.bert.pooler is not None
    assert {name for name, p in run.model.named_parameters() if p.requires_grad} == \
        {name for name, _ in run.model.named_parameters() if expected(name)}
    if trained["train"] == "lora":  # the six projections of every layer, never the pooler
        assert sum(name.endswith("lora_A") for name, _ in run.model.named_parameters()) == 6
    report = json.loads((Path(run.out_dir) / "report.json").read_text())
    assert np.array(report["confusion_matrix"]).sum() == len(run.test_labels)


def test_a_hugging_face_bert_folder_is_a_base_too(tmp_path, colours, capsys):
    hugging_face_classifier(tmp_path / "hf")
    assert main(["finetune", "classify", "--checkpoint", str(tmp_path / "hf"), "--data", colours, "--out",
                 str(tmp_path / "cls"), "--max-steps", "2", "--eval-interval", "2", "--batch-size", "4",
                 "--quiet"]) == 0
    assert "pretrained BERT of 2 blocks" in capsys.readouterr().out
    assert main(["finetune", "classify", "--checkpoint", str(tmp_path / "hf"), "--data", colours, "--out",
                 str(tmp_path / "cls2"), "--train", "last-blocks", "--last-blocks", "3", "--quiet"]) == 2
    assert "--last-blocks 3: the model has 2 blocks" in capsys.readouterr().err

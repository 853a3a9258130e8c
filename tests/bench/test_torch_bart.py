"""The benchmark's PyTorch BART is the same model as npllm's: same logits on a padded, damaged batch."""

import dataclasses

import numpy as np
import pytest

from npllm import no_grad
from npllm.bench.train import PRESETS, _bart_config, _denoising_batch
from npllm.models import BARTForConditionalGeneration


@pytest.mark.parity
def test_the_benchmarks_pytorch_bart_is_the_same_model():
    torch = pytest.importorskip("torch")
    from npllm.bench.torch_bart import TorchBART

    preset = dict(PRESETS["tiny"], batch_size=3, context_length=20, n_embd=16, n_head=2)
    config = dataclasses.replace(_bart_config(preset), dtype="float64")
    model = BARTForConditionalGeneration(config, seed=0)
    for p in model.parameters():
        p.data += np.random.default_rng(1).standard_normal(p.shape) * 0.05
    batch = _denoising_batch(preset)
    batch["attention_mask"][0, -3:] = 0  # some source padding, hidden from both attentions
    with no_grad():
        ours = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"]).data
    theirs = TorchBART(model.state_dict(), config)(
        *(torch.from_numpy(batch[name]) for name in ("input_ids", "decoder_input_ids", "attention_mask")))
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=0, atol=1e-12)

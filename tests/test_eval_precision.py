"""Evaluation cross-entropy is computed on the (N, V) layout: summed log-likelihoods agree with an fp64 reference.

On CPU, ``F.cross_entropy`` over ``logits.transpose(1, 2)`` (the class dimension in the middle) is off by ~1e-4 per
token at GPT-2's logit scale; on the (N, V) layout the error is the float32 rounding of the result. The model here is a
tiny random GPT-2 whose logits are mapped to GPT-2 124M's scale (around -100, spread of a few units), and the
reference is computed in float64 from the very logits the scoring function saw.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minigpt_hf.evaluation.hellaswag import score_example
from minigpt_hf.evaluation.loss import token_losses
from minigpt_hf.tokenization import get_tokenizer

TOLERANCE = 1e-4  # on a sum of log-likelihoods over up to ~20 tokens


class RealisticLogits(torch.nn.Module):
    """Wraps a tiny random GPT-2: its logits (std ~0.16 around 0) become ``20 * logits - 100``; records them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128)).eval()
        self.config = self.inner.config
        self.seen = []

    def forward(self, input_ids, attention_mask=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        out.logits = out.logits * 20.0 - 100.0
        self.seen.append((input_ids.cpu(), out.logits.detach().cpu()))
        return out


def reference_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float64 ``-log p(target)`` at every position of ``logits`` (B, T, V) for ``targets`` (B, T)."""
    return -torch.log_softmax(logits.double(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.fixture(scope="module")
def model():
    return RealisticLogits()


def test_hellaswag_summed_loss_matches_float64(model):
    tok = get_tokenizer()
    example = {
        "ctx": "A man is sitting on a roof. He",
        "endings": [
            "is using wrap to wrap a pair of skis, then he carefully climbs down the ladder again.",
            "is ripping level tiles off while the neighbours watch from the garden below the house.",
            "is holding a rubik's cube that he found in the gutter next to an old tennis ball.",
            "starts pulling up roofing on a roof, tossing the shingles into a skip on the drive.",
        ],
        "label": 3,
    }
    model.seen.clear()
    summed, mean = score_example(model, tok, example)
    (input_ids, logits), = model.seen
    n_ctx = len(tok(example["ctx"])["input_ids"])
    nll = reference_nll(logits[:, :-1], input_ids[:, 1:])
    for i, ending in enumerate(example["endings"]):
        n_end = len(tok(" " + ending, add_special_tokens=False)["input_ids"])
        assert 15 <= n_end <= 25  # realistic ending lengths
        expected = nll[i, n_ctx - 1 : n_ctx - 1 + n_end].sum().item()
        assert abs(summed[i].item() - expected) <= TOLERANCE, (i, summed[i].item() - expected)
        assert abs(mean[i].item() - expected / n_end) <= TOLERANCE / n_end


def test_validation_token_losses_match_float64(model):
    windows = torch.randint(0, 50257, (4, 21), generator=torch.Generator().manual_seed(2))
    model.seen.clear()
    losses = token_losses(model, windows)
    (_, logits), = model.seen
    expected = reference_nll(logits, windows[:, 1:])
    assert losses.shape == expected.shape == (4, 20)
    error = (losses.double().sum(dim=1) - expected.sum(dim=1)).abs().max().item()
    assert error <= TOLERANCE, error

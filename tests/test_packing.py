"""Packed sequences (padding-free training): documents in one row, position_ids restarting at 0 at each one."""

import pytest
import torch
import transformers.masking_utils as masking_utils
from transformers import DataCollatorWithFlattening

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM

LENGTHS = (5, 9, 3, 7)


def tiny_config(**overrides):
    return MiniGPTConfig(**{**dict(n_layer=2, n_head=4, n_embd=64, block_size=64), **overrides})


def documents(lengths=LENGTHS, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50257, (n,), generator=g) for n in lengths]


def model(implementation="sdpa"):
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config()).eval()
    m.set_attn_implementation(implementation)
    return m


def packed(docs):
    return torch.cat(docs)[None], torch.cat([torch.arange(len(d)) for d in docs])[None]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_row_equals_each_document_alone(implementation):
    m = model(implementation)
    docs = documents()
    x, positions = packed(docs)
    logits = m(x, position_ids=positions).logits  # eval mode: a cache is made, the packed prefill still separates
    alone = torch.cat([m(d[None]).logits for d in docs], 1)
    assert (logits - alone).abs().max().item() <= 1e-5
    # without the position_ids the row is one long document: the later documents see the earlier ones
    assert (m(x).logits - alone).abs().max().item() > 1e-3


def test_packed_rows_in_a_batch_and_in_training_mode():
    m = model().train()
    docs = documents((4, 6, 6, 4))
    (x1, p1), (x2, p2) = packed(docs[:2]), packed(docs[2:])
    logits = m(torch.cat([x1, x2]), position_ids=torch.cat([p1, p2])).logits
    alone = [m(d[None]).logits for d in docs]
    torch.testing.assert_close(logits[0], torch.cat(alone[:2], 1)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1], torch.cat(alone[2:], 1)[0], atol=1e-5, rtol=0)


def test_loss_through_data_collator_with_flattening_equals_the_padded_batch():
    m = model().train()
    docs = documents()
    flat = DataCollatorWithFlattening()([{"input_ids": d.tolist()} for d in docs])
    assert set(flat) == {"input_ids", "labels", "position_ids"} and flat["input_ids"].shape == (1, sum(LENGTHS))
    packed_loss = m(**flat).loss
    # the same documents right-padded, padding ignored in the labels: the same sum(n - 1) targets
    longest = max(LENGTHS)
    x = torch.full((len(docs), longest), 50256)
    mask = torch.zeros_like(x)
    for i, d in enumerate(docs):
        x[i, : len(d)], mask[i, : len(d)] = d, 1
    labels = x.masked_fill(mask == 0, -100)
    targets = (flat["labels"][:, 1:] != -100).sum()  # the collator hides each document's first token
    assert targets == (labels[:, 1:] != -100).sum() == sum(LENGTHS) - len(docs)
    padded_loss = m(x, attention_mask=mask, labels=labels).loss
    assert abs(packed_loss.item() - padded_loss.item()) <= 1e-5
    packed_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_the_length_limit_applies_to_positions_not_to_the_packed_row():
    m = model()
    docs = documents((40, 40, 30))  # 110 tokens in one row, block_size 64
    x, positions = packed(docs)
    logits = m(x, position_ids=positions).logits
    torch.testing.assert_close(logits[:, 40:80], m(docs[1][None]).logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="block_size"):
        m(x, position_ids=torch.arange(110)[None])  # one 110-token document does not fit
    with pytest.raises(ValueError, match="block_size"):
        m(x)


def test_normal_training_never_looks_for_packing(monkeypatch):
    """No position_ids (the normal training batch): no packed-sequence detection, no mask, SDPA's is_causal path."""

    def forbidden(*args, **kwargs):
        raise AssertionError("packed-sequence detection ran on an ordinary batch")

    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", forbidden)
    m = model().train()
    x = documents((16, 16))
    batch = torch.stack(x)
    m(batch, labels=batch).loss.backward()
    with pytest.raises(AssertionError, match="packed-sequence detection"):
        m(batch, position_ids=torch.arange(16)[None])  # explicit position_ids are looked at

"""Attention the transformers way: the attention interface (eager / sdpa / flex / any registered function),
output_attentions, return_dict=False, AutoModel."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AutoModel, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, MiniGPTModel
from minigpt_hf.checkpoint import save_model_folder


def tiny_config(**overrides):
    return MiniGPTConfig(**{**dict(n_layer=2, n_head=4, n_embd=64, block_size=64), **overrides})


def ids(batch=2, length=12, seed=1):
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(seed))


def pair(implementation="eager", **overrides):
    """The same weights twice: the default (sdpa) model and one on ``implementation``."""
    torch.manual_seed(0)
    sdpa = MiniGPTForCausalLM(tiny_config(**overrides)).eval()
    other = MiniGPTForCausalLM(tiny_config(**overrides)).eval()
    other.load_state_dict(sdpa.state_dict())
    other.set_attn_implementation(implementation)
    return sdpa, other


def left_padded(x, pad=(3, 0)):
    mask = torch.ones_like(x)
    for row, n in enumerate(pad):
        mask[row, :n] = 0
    return x.masked_fill(mask == 0, 50256), mask


# ---------------------------------------------------------------------------------------------- implementations


def test_default_is_sdpa_and_eager_runs_the_matmul_softmax_path(monkeypatch):
    sdpa, eager = pair()
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    eager(ids())
    assert calls == []  # eager never reaches SDPA...
    sdpa(ids())
    assert len(calls) == sdpa.config.n_layer  # ...the default does, once per layer


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("cached", [False, True])
def test_eager_and_sdpa_agree(padded, cached):
    sdpa, eager = pair()
    x, mask = left_padded(ids(length=20)) if padded else (ids(length=20), None)
    logits = []
    for m in (sdpa, eager):
        if cached:  # a prefill of 8 tokens, then 11 at once (q < kv: the mask must be aligned bottom right), then 1
            cache, parts = DynamicCache(), []
            for a, b in ((0, 8), (8, 19), (19, 20)):
                part_mask = None if mask is None else mask[:, :b]
                parts.append(m(x[:, a:b], attention_mask=part_mask, cache=cache, use_cache=True).logits)
            logits.append(torch.cat(parts, 1))
        else:
            logits.append(m(x, attention_mask=mask).logits)
    real = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()  # padding rows are never read
    assert (logits[0] - logits[1])[real].abs().max().item() <= 1e-5
    assert torch.isfinite(logits[0][..., :50257]).all() and torch.isfinite(logits[1][..., :50257]).all()


def test_eager_and_sdpa_generate_the_same_tokens_with_a_static_cache():
    sdpa, eager = pair()
    x, mask = left_padded(ids(batch=2, length=6), pad=(2, 0))
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, cache_implementation="static")
    assert sdpa.generate(x, **kwargs).tolist() == eager.generate(x, **kwargs).tolist()


def test_any_registered_attention_function_is_used_with_dropout_only_in_training():
    """Hub kernels and custom functions arrive through AttentionInterface.register; the model must call them with
    transformers' signature, config.dropout while training and 0 otherwise."""
    seen = []

    def recording(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        seen.append((dropout, scaling, query.shape))
        # no mask function is registered for this name, so (like a flash kernel) it gets no mask: causal via is_causal
        assert attention_mask is None and module.is_causal
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, None, 0.0, scaling)

    AttentionInterface.register("minigpt_test_recording", recording)
    sdpa, custom = pair("minigpt_test_recording", dropout=0.25)
    x = ids()
    torch.testing.assert_close(custom(x).logits, sdpa(x).logits, atol=1e-5, rtol=0)
    assert len(seen) == 2 and seen[0][:3] == (0.0, 16**-0.5, (2, 4, 12, 16))
    seen.clear()
    custom.train()(x)
    assert [s[0] for s in seen] == [0.25, 0.25]


def test_attention_dropout_applies_in_training_only():
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config(dropout=0.5))
    m.set_attn_implementation("eager")
    x = ids()
    weights = m.train()(x, output_attentions=True).attentions[0]
    assert (weights == 0).logical_and(torch.ones_like(weights).tril() == 1).any()  # dropped inside the causal part
    weights = m.eval()(x, output_attentions=True).attentions[0]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 12))


@pytest.mark.slow
def test_flex_attention_agrees_with_sdpa():
    """FlexAttention on CPU: inference only (torch has no CPU backward for it), compiled on first use (~10 s)."""
    sdpa, flex = pair("flex_attention")
    x, mask = left_padded(ids())
    with torch.no_grad():
        torch.testing.assert_close(flex(x).logits, sdpa(x).logits, atol=1e-5, rtol=0)
        real = mask.bool()
        diff = flex(x, attention_mask=mask).logits - sdpa(x, attention_mask=mask).logits
        assert diff[real].abs().max().item() <= 1e-5


def test_flash_and_flex_are_declared():
    assert MiniGPTForCausalLM._supports_sdpa and MiniGPTForCausalLM._supports_flash_attn
    assert MiniGPTForCausalLM._supports_flex_attn and MiniGPTForCausalLM._supports_attention_backend


# ---------------------------------------------------------------------------------------------- output_attentions


def test_output_attentions_returns_every_layers_weights():
    sdpa, eager = pair()
    x, mask = left_padded(ids())
    out = eager(x, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == eager.config.n_layer
    for w in out.attentions:
        assert w.shape == (2, 4, 12, 12)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 12))  # a distribution per query
        future = torch.ones(12, 12).triu(1).bool()
        assert (w[1][:, future] == 0).all() and (w[0, :, 3:][:, future[3:]] == 0).all()  # causal (real queries)
        assert (w[0, :, 3:, :3] == 0).all()  # real tokens never attend to padding
    # layer 0's weights are softmax(q k^T / sqrt(d)) of its own projections
    attn = eager.transformer.h[0].attn
    h = eager.transformer.h[0].ln_1(eager.transformer.wte(x[1:]) + eager.transformer.wpe(torch.arange(12)))
    q, k, _ = attn.c_attn(h).split(64, dim=2)
    q, k = (t.view(1, 12, 4, 16).transpose(1, 2) for t in (q, k))
    scores = (q @ k.transpose(-1, -2) / 4).masked_fill(torch.ones(12, 12).triu(1).bool(), float("-inf"))
    torch.testing.assert_close(out.attentions[0][1:], scores.softmax(-1), atol=1e-6, rtol=1e-5)
    # the config switch works too; the base model returns them as well
    eager.config.output_attentions = True
    assert len(eager(x).attentions) == 2 and len(eager.transformer(x).attentions) == 2
    assert eager(x, output_attentions=False).attentions is None  # the argument wins over the config
    eager.config.output_attentions = False
    assert eager(x).attentions is None


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_output_attentions_without_eager_warns_once_and_goes_on(implementation):
    """transformers' contract (its sdpa/flash integrations, GPT-2): no error, one warning naming eager, no weights."""
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    from minigpt_hf import modeling_minigpt

    sdpa, other = pair(implementation)
    x = ids()
    logging.warning_once.cache_clear()  # "once" per process: start from a clean slate
    with torch.no_grad():  # flex attention has no CPU backward
        with CaptureLogger(modeling_minigpt.logger) as first:
            out = other(x, output_attentions=True, output_hidden_states=True)
        with CaptureLogger(modeling_minigpt.logger) as second:
            again = other.transformer(x, output_attentions=True)
        reference = sdpa(x).logits
    assert 'attn_implementation="eager"' in first.out and repr(implementation) in first.out
    assert second.out == ""  # once
    assert out.attentions == () and again.attentions == ()  # what GPT2LMHeadModel returns under sdpa
    torch.testing.assert_close(out.logits, reference, atol=1e-5, rtol=1e-4)  # the forward is unchanged
    assert len(out.hidden_states) == other.config.n_layer + 1


def test_eager_matches_sdpa_with_output_attentions():
    """transformers' common test_eager_matches_sdpa_inference_fp32_pad_left_output_attentions, on this model: batch
    7, the last row left-padded, hidden states and attentions asked of both; the last hidden state agrees on the real
    tokens, eager returns the weights and sdpa none."""
    sdpa, eager = pair()
    x = ids(batch=7, length=7)
    mask = torch.ones_like(x)
    mask[-1, :2] = 0
    kwargs = dict(attention_mask=mask, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        out_eager, out_sdpa = eager(x, **kwargs), sdpa(x, **kwargs)
    real = mask.bool()
    torch.testing.assert_close(out_sdpa.hidden_states[-1][real], out_eager.hidden_states[-1][real],
                               atol=1e-6, rtol=1e-4)
    assert len(out_eager.attentions) == eager.config.n_layer and out_sdpa.attentions == ()


def test_outputs_equivalence_with_output_attentions_under_sdpa():
    """transformers' common test_model_outputs_equivalence, on the default (sdpa) model: return_dict=False gives
    the tensors of return_dict=True's to_tuple(), also with output_attentions / output_hidden_states."""
    torch.manual_seed(0)
    for model in (MiniGPTForCausalLM(tiny_config()).eval(), MiniGPTModel(tiny_config()).eval()):
        assert model.config._attn_implementation == "sdpa"
        x = ids()
        for extra in ({}, {"output_hidden_states": True}, {"output_attentions": True},
                      {"output_hidden_states": True, "output_attentions": True}):
            with torch.no_grad():
                as_tuple = model(x, use_cache=False, return_dict=False, **extra)
                as_dict = model(x, use_cache=False, return_dict=True, **extra).to_tuple()
            assert len(as_tuple) == len(as_dict)
            for a, b in zip(as_tuple, as_dict):
                if isinstance(a, tuple):
                    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
                else:
                    assert torch.equal(a, b)


def test_generate_returns_attentions_also_with_assisted_decoding():
    _, eager = pair()
    torch.manual_seed(1)
    assistant = MiniGPTForCausalLM(tiny_config(n_layer=1)).eval()
    assistant.set_attn_implementation("eager")
    x = ids(batch=1, length=5)
    kwargs = dict(max_new_tokens=6, do_sample=False, output_attentions=True, return_dict_in_generate=True)
    for extra in ({}, {"assistant_model": assistant}):
        out = eager.generate(x, **kwargs, **extra)
        assert out.sequences.tolist() == eager.generate(x, max_new_tokens=6, do_sample=False).tolist()
        assert len(out.attentions) == 6  # one entry per new token, each with every layer's weights
        assert all(len(step) == 2 for step in out.attentions)
        assert out.attentions[0][0].shape == (1, 4, 5, 5)
        assert out.attentions[-1][1].shape[-2:] == (1, 10)
        torch.testing.assert_close(out.attentions[-1][1].sum(-1), torch.ones(1, 4, 1))


# ---------------------------------------------------------------------------------------------- return_dict


def test_return_dict_false_gives_tuples_in_hf_order():
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config()).eval()
    m.set_attn_implementation("eager")
    x = ids()
    full = m(x, labels=x, output_hidden_states=True, output_attentions=True)
    as_tuple = m(x, labels=x, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 5  # loss, logits, cache, hidden_states, attentions
    torch.testing.assert_close(as_tuple[0], full.loss)
    torch.testing.assert_close(as_tuple[1], full.logits)
    assert isinstance(as_tuple[2], DynamicCache)
    assert len(as_tuple[3]) == 3 and len(as_tuple[4]) == 2
    base = m.transformer(x, use_cache=False, return_dict=False)
    assert isinstance(base, tuple) and len(base) == 1
    torch.testing.assert_close(base[0], full.hidden_states[-1])
    # the config switch (config.return_dict / use_return_dict) does the same
    m.config.return_dict = False
    assert not m.config.use_return_dict
    logits, cache = m(x)
    torch.testing.assert_close(logits, full.logits)
    assert isinstance(m.transformer(x, use_cache=False), tuple)
    m.config.return_dict = True
    assert isinstance(m(x), CausalLMOutputWithPast) and isinstance(m.transformer(x), BaseModelOutputWithPast)


# ---------------------------------------------------------------------------------------------- AutoModel


def test_automodel_knows_the_base_model(tmp_path, offline_env):
    torch.manual_seed(0)
    lm = MiniGPTForCausalLM(tiny_config()).eval()
    assert isinstance(AutoModel.from_config(lm.config), MiniGPTModel)
    folder = save_model_folder(lm, tmp_path / "ckpt")
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_minigpt.MiniGPTModel"
    base = AutoModel.from_pretrained(folder)
    assert type(base) is MiniGPTModel
    x = ids(batch=1, length=6)
    expected = lm.transformer(x).last_hidden_state
    torch.testing.assert_close(base(x).last_hidden_state, expected)
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        h = m(torch.tensor([{x[0].tolist()}])).last_hidden_state
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        torch.save(h, {str(tmp_path / "h.pt")!r})
        print(type(m).__module__.split(".")[0], type(m).__name__)
        """
    )
    env = dict(offline_env, PYTHONPATH="")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["transformers_modules", "MiniGPTModel"]
    torch.testing.assert_close(torch.load(tmp_path / "h.pt"), expected)

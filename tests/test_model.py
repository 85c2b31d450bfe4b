"""MiniGPT as a transformers citizen: config, parameter groups, loss, masks, KV cache, generation, Auto* loading."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, TextIteratorStreamer

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, get_tokenizer
from minigpt_hf.checkpoint import save_model_folder

PROMPT = "Hello, I'm a language model,"


def tiny_config(**overrides):
    return MiniGPTConfig(**{**dict(n_layer=2, n_head=4, n_embd=64, block_size=64), **overrides})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniGPTForCausalLM(tiny_config()).eval()


def ids(batch=2, length=12, seed=1):
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_are_the_notes_gpt2_small():
    c = MiniGPTConfig()
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd) == (50304, 1024, 12, 12, 768)
    assert (c.mlp_ratio * c.n_embd, c.head_dim, c.dropout, c.layer_norm_epsilon) == (3072, 64, 0.0, 1e-5)
    assert c.tie_word_embeddings and c.bias and c.initializer_range == 0.02
    assert c.eos_token_id == c.bos_token_id == 50256
    # standard HF names are views on the notes' names
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.max_position_embeddings) == (768, 12, 12, 1024)
    assert AutoConfig.for_model("minigpt").model_type == "minigpt"


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(n_embd=100, n_head=12), "n_embd"),
        (dict(n_layer=0), "n_layer"),
        (dict(block_size=-1), "block_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(vocab_size=50000), "vocab_size"),
    ],
)
def test_config_rejects_invalid_values(bad, field):
    with pytest.raises(ValueError, match=field):
        MiniGPTConfig(**bad)


def test_preset_unknown_is_clear():
    with pytest.raises(ValueError, match="unknown MiniGPT preset"):
        MiniGPTConfig.from_preset("gpt5")


# ---------------------------------------------------------------------------------------------- structure


def test_parameter_groups_match_the_notes():
    with torch.device("meta"):
        m = MiniGPTForCausalLM(MiniGPTConfig())
    decay, no_decay = m.optimizer_groups(0.1)
    assert (len(decay["params"]), sum(p.numel() for p in decay["params"])) == (50, 124_354_560)
    assert (len(no_decay["params"]), sum(p.numel() for p in no_decay["params"])) == (98, 121_344)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert m.lm_head.weight is m.transformer.wte.weight


def test_nanogpt_initialisation():
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config(n_layer=8, n_embd=256, n_head=4))
    block = m.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    resid_std = 0.02 / (2 * 8) ** 0.5
    assert block.attn.c_proj.weight.std().item() == pytest.approx(resid_std, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(resid_std, rel=0.05)
    assert m.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.c_attn.bias.abs().max().item() == 0.0
    assert (block.ln_1.weight == 1).all() and (block.ln_1.bias == 0).all()


# ---------------------------------------------------------------------------------------------- loss


def test_labels_follow_hf_convention(model):
    x = ids()
    labels = x.clone()
    labels[0, 5:] = -100
    out = model(x, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float()
    expected = F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    # already-shifted targets (x, y windows as in nanoGPT) give the same loss
    shifted = model(x[:, :-1], shift_labels=labels[:, 1:])
    torch.testing.assert_close(shifted.loss, expected)


def test_padded_vocabulary_is_never_predicted(model):
    logits = model(ids()).logits
    assert logits.shape[-1] == 50304
    assert (logits[..., 50257:] == torch.finfo(logits.dtype).min).all()
    assert torch.isfinite(logits[..., :50257]).all()


def test_padded_ids_are_never_generated():
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config()).eval()
    with torch.no_grad():  # make the padded rows of the tied head enormous: unmasked, they would win every step
        m.transformer.wte.weight[50257:] = 50.0
    x = ids(batch=4, length=4)
    greedy = m.generate(x, max_new_tokens=10, do_sample=False)
    sampled = m.generate(x, max_new_tokens=10, do_sample=True, top_k=50, temperature=2.0)
    assert greedy.max() < 50257 and sampled.max() < 50257


# ---------------------------------------------------------------------------------------------- attention


def test_kv_cache_matches_full_forward_when_several_new_tokens(model):
    """The trap: with a cache and q < kv, is_causal=True would align the mask to the upper left."""
    x = ids(length=20)
    full = model(x, use_cache=False).logits
    cache = DynamicCache()
    first = model(x[:, :8], cache=cache, use_cache=True)
    rest = model(x[:, 8:], cache=cache, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=1e-5)


def test_old_cache_argument_name_still_works(model):
    x = ids(length=10)
    cache = DynamicCache()
    model(x[:, :6], past_key_values=cache, use_cache=True)
    step = model(x[:, 6:], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(step, model(x).logits[:, 6:], atol=1e-5, rtol=1e-5)


def test_left_padding_equals_unpadded(model):
    x = ids(batch=1, length=10)
    padded = torch.cat([torch.full((1, 3), 50256), x], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], 1)
    a = model(x).logits
    b = model(padded, attention_mask=mask).logits[:, 3:]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_batched_left_padded_generation_equals_one_by_one(model):
    tok = get_tokenizer()
    prompts = ["Hello, I'm a language model,", "The", "To be, or not to be"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    for i, p in enumerate(prompts):
        single = model.generate(**tok(p, return_tensors="pt"), max_new_tokens=8, do_sample=False)
        assert out[i, -8:].tolist() == single[0, -8:].tolist()


def test_explicit_position_ids(model):
    x = ids(length=6)
    shifted = model(x, position_ids=torch.arange(4, 10)[None]).logits
    assert not torch.allclose(shifted, model(x).logits)
    # after a 4-token prefix in the cache, the default positions continue at 4
    prefix = ids(length=4, seed=9)
    caches = [DynamicCache(), DynamicCache()]
    for cache in caches:
        model(prefix, cache=cache, use_cache=True)
    default = model(x, cache=caches[0]).logits
    explicit = model(x, cache=caches[1], position_ids=torch.arange(4, 10)[None]).logits
    torch.testing.assert_close(default, explicit)


def test_too_long_input_is_a_clear_error(model):
    with pytest.raises(ValueError, match="block_size"):
        model(ids(length=65))


# ---------------------------------------------------------------------------------------------- HF features


def test_hidden_states_and_output_class(model):
    out = model(ids(), output_hidden_states=True)
    assert type(out).__name__ == "CausalLMOutputWithPast"
    assert len(out.hidden_states) == model.config.n_layer + 1
    base = model.transformer(ids()).last_hidden_state
    torch.testing.assert_close(out.hidden_states[-1], base)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    m = MiniGPTForCausalLM(tiny_config()).train()
    x = ids()
    m(x, labels=x).loss.backward()
    plain = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    # transformers renamed the switch in 5.2x; use whichever this version has
    getattr(m, "activation_checkpointing_enable", m.gradient_checkpointing_enable)()
    assert m.transformer.h[0].gradient_checkpointing
    m(x, labels=x).loss.backward()
    for a, p in zip(plain, m.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_resize_token_embeddings_keeps_the_head_tied(model):
    m = MiniGPTForCausalLM(tiny_config())
    m.resize_token_embeddings(50432)
    assert m.config.vocab_size == 50432 and m.lm_head.weight.shape[0] == 50432
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    assert m(ids()).logits.shape[-1] == 50432


# ---------------------------------------------------------------------------------------------- generation


def test_cached_and_uncached_greedy_decoding_agree(model):
    x = ids(length=5)
    a = model.generate(x, max_new_tokens=24, do_sample=False, use_cache=True)
    b = model.generate(x, max_new_tokens=24, do_sample=False, use_cache=False)
    assert a.tolist() == b.tolist()


def test_static_cache_generation_agrees(model):
    x = ids(length=5)
    a = model.generate(x, max_new_tokens=12, do_sample=False)
    b = model.generate(x, max_new_tokens=12, do_sample=False, cache_implementation="static")
    assert a.tolist() == b.tolist()


def test_the_notes_sampling_and_generation_modes(model):
    tok = get_tokenizer()
    x = tok([PROMPT] * 4, return_tensors="pt")
    torch.manual_seed(42)
    samples = model.generate(**x, do_sample=True, top_k=50, max_length=32)
    assert samples.shape == (4, 32)
    assert all(tok.decode(s).startswith(PROMPT) for s in samples)
    assert model.generate(**x, do_sample=True, top_p=0.9, temperature=0.7, max_new_tokens=4).shape == (4, 12)
    beams = model.generate(**tok(PROMPT, return_tensors="pt"), num_beams=3, max_new_tokens=5, do_sample=False)
    assert beams.shape == (1, 13)


def test_streamer_yields_the_generated_text(model):
    import threading

    tok = get_tokenizer()
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    x = tok(PROMPT, return_tensors="pt")
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(out=model.generate(**x, max_new_tokens=6, do_sample=False, streamer=streamer))
    )
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == tok.decode(result["out"][0, x["input_ids"].shape[1] :])


# ---------------------------------------------------------------------------------------------- saving / loading


def test_save_pretrained_writes_safetensors_code_and_auto_map(tmp_path, model):
    folder = save_model_folder(model, tmp_path / "ckpt")
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_minigpt.py", "configuration_minigpt.py", "presets.py"} <= files
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_minigpt.MiniGPTConfig",
        "AutoModel": "modeling_minigpt.MiniGPTModel",
        "AutoModelForCausalLM": "modeling_minigpt.MiniGPTForCausalLM",
    }
    again = AutoModelForCausalLM.from_pretrained(folder)
    assert isinstance(again, MiniGPTForCausalLM)
    torch.testing.assert_close(again(ids()).logits, model(ids()).logits)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_model_folder(model, folder)


def test_fresh_process_without_minigpt_hf_loads_and_generates_the_same(tmp_path, model, offline_env):
    folder = save_model_folder(model, tmp_path / "ckpt")
    x = ids(batch=1, length=6)
    expected = model.generate(x, max_new_tokens=10, do_sample=False)[0].tolist()
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
        m = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)
        out = m.generate(torch.tensor([{x[0].tolist()}]), max_new_tokens=10, do_sample=False)[0].tolist()
        tok = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
        pipe = pipeline("text-generation", model={str(folder)!r}, trust_remote_code=True)
        text = pipe("Hello", max_new_tokens=3, do_sample=False)[0]["generated_text"]
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        print(type(m).__module__.split(".")[0], out == {expected}, tok("Hello")["input_ids"], text.startswith("Hello"))
        """
    )
    # run from tmp_path with the repo off sys.path, so only the saved folder's code can define the model
    env = dict(offline_env, PYTHONPATH="")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["transformers_modules", "True", "[15496]", "True"]


# ---------------------------------------------------------------------------------------------- chunked loss


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_chunked_loss_equals_the_plain_loss_and_gradients(chunk):
    torch.manual_seed(0)
    plain = MiniGPTForCausalLM(tiny_config())
    chunked = MiniGPTForCausalLM(tiny_config(loss_chunk_size=chunk))
    chunked.load_state_dict(plain.state_dict())
    x = ids(batch=3, length=20)
    labels = x.clone()
    labels[1, :7] = -100
    a, b = plain(x, labels=labels), chunked(x, labels=labels)
    assert b.logits is None
    assert chunked.eval()(x, labels=labels).logits is not None  # evaluation and inference always get logits
    chunked.train()
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
    # already shifted targets and HF's num_items_in_batch (gradient accumulation) take the same path
    y = labels[:, 1:]
    torch.testing.assert_close(chunked(x[:, :-1], shift_labels=y).loss, plain(x[:, :-1], shift_labels=y).loss)
    n = torch.tensor(100)
    torch.testing.assert_close(
        chunked(x, labels=labels, num_items_in_batch=n).loss, plain(x, labels=labels, num_items_in_batch=n).loss
    )


def test_chunked_loss_under_bf16_autocast_is_close():
    torch.manual_seed(0)
    plain = MiniGPTForCausalLM(tiny_config())
    chunked = MiniGPTForCausalLM(tiny_config(loss_chunk_size=16))
    chunked.load_state_dict(plain.state_dict())
    x = ids(batch=2, length=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = plain(x, labels=x).loss, chunked(x, labels=x).loss
    assert abs(a.item() - b.item()) < 1e-2
    b.backward()
    assert all(torch.isfinite(p.grad).all() for p in chunked.parameters())

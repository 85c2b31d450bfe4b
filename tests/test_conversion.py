"""GPT-2 checkpoints -> MiniGPT: exact parity with GPT2LMHeadModel, and clear errors for bad checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from minigpt_hf import MiniGPTForCausalLM
from minigpt_hf.conversion import gpt2_config_to_minigpt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A randomly initialised GPT-2 of a small shape, saved as HF would (no hub access needed)."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=3, n_head=4, n_embd=64, n_positions=128, attn_implementation="sdpa")
    model = GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return folder, model


def x(batch=2, length=24):
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("vocab_size", [None, 50304])
def test_logits_and_greedy_tokens_match_gpt2(gpt2_folder, vocab_size):
    folder, gpt2 = gpt2_folder
    model = MiniGPTForCausalLM.from_gpt2(str(folder), vocab_size=vocab_size)
    assert model.config.vocab_size == (vocab_size or 50257)
    with torch.no_grad():
        ref, ours = gpt2(x()).logits, model(x()).logits
    assert (ref - ours[..., :50257]).abs().max().item() <= 1e-4
    prompt = x(length=6)
    expected = gpt2.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=50256)
    assert model.generate(prompt, max_new_tokens=20, do_sample=False).tolist() == expected.tolist()


def test_old_checkpoints_without_prefix_and_with_attention_buffers(gpt2_folder, tmp_path):
    folder, gpt2 = gpt2_folder
    state = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))  # the causal-mask buffer of old GPT-2 files
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    model = MiniGPTForCausalLM.from_gpt2(str(tmp_path))
    with torch.no_grad():
        assert (gpt2(x()).logits - model(x()).logits).abs().max().item() <= 1e-4


def _broken_copy(folder, tmp_path, edit):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    return str(tmp_path)


def test_missing_tensor_is_named(gpt2_folder, tmp_path):
    path = _broken_copy(gpt2_folder[0], tmp_path, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'transformer\.h\.1\.mlp\.c_fc\.weight'"):
        MiniGPTForCausalLM.from_gpt2(path)


def test_wrong_shape_is_named(gpt2_folder, tmp_path):
    def shrink(s):
        s["transformer.h.2.attn.c_proj.weight"] = s["transformer.h.2.attn.c_proj.weight"][:, :10].contiguous()

    with pytest.raises(ValueError, match=r"'transformer\.h\.2\.attn\.c_proj\.weight' has shape"):
        MiniGPTForCausalLM.from_gpt2(_broken_copy(gpt2_folder[0], tmp_path, shrink))


def test_not_gpt2_and_missing_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a GPT-2 checkpoint"):
        MiniGPTForCausalLM.from_gpt2(str(tmp_path))
    with pytest.raises(ValueError, match="no config.json"):
        MiniGPTForCausalLM.from_gpt2(str(tmp_path.parent))


def test_corrupt_weights_file_is_clear(gpt2_folder, tmp_path):
    (tmp_path / "config.json").write_text((gpt2_folder[0] / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        MiniGPTForCausalLM.from_gpt2(str(tmp_path))


@pytest.mark.parametrize(
    "name, shape",
    [("gpt2", (12, 12, 768)), ("gpt2-medium", (24, 16, 1024)), ("gpt2-large", (36, 20, 1280)), ("gpt2-xl", (48, 25, 1600))],
)
def test_all_openai_shapes_map(name, shape):
    layers, heads, width = shape
    hf = GPT2Config(n_layer=layers, n_head=heads, n_embd=width).to_dict()
    config = gpt2_config_to_minigpt(hf, vocab_size=50304)
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (layers, heads, width, 1024)
    assert (config.vocab_size, config.tokenizer_vocab_size) == (50304, 50257)


def test_unsupported_variant_is_refused():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        gpt2_config_to_minigpt(GPT2Config(scale_attn_by_inverse_layer_idx=True).to_dict())


def test_convert_script_writes_a_loadable_folder(gpt2_folder, tmp_path, offline_env):
    folder, gpt2 = gpt2_folder
    out = tmp_path / "converted"
    cmd = [sys.executable, str(ROOT / "scripts" / "convert_gpt2.py"), str(folder), str(out), "--vocab_size", "50304"]
    res = subprocess.run(cmd, env=offline_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert (gpt2(x()).logits - model(x()).logits[..., :50257]).abs().max().item() <= 1e-4
    again = subprocess.run(cmd, env=offline_env, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_a_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        MiniGPTForCausalLM.from_gpt2(str(tmp_path / "absent"))

"""GPT-2 weights (an HF ``gpt2`` / ``gpt2-medium`` / ``gpt2-large`` / ``gpt2-xl`` checkpoint) -> MiniGPT.

HF's GPT-2 stores its linear layers as ``Conv1D`` (weight shape ``(in, out)``); MiniGPT uses ``nn.Linear``
(``(out, in)``), so those four weights per block are transposed. The causal-mask buffers (``attn.bias``,
``attn.masked_bias``) of old checkpoints are dropped. The 50257-token vocabulary can be padded to 50304 rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .configuration_minigpt import MiniGPTConfig
from .modeling_minigpt import MiniGPTForCausalLM

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _resolve(name_or_path: str) -> Path:
    """A local folder as is; otherwise a Hub repo id downloaded (config and weights only) to the HF cache."""
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    if os.path.exists(name_or_path):
        raise ValueError(f"{name_or_path} is a file; pass the folder that holds config.json and the weights")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:  # a path, not a hub id (USER/NAME)
        raise FileNotFoundError(f"{name_or_path}: no such folder; pass a GPT-2 checkpoint folder or a hub id (gpt2)")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name_or_path, allow_patterns=["config.json", "*.safetensors", "*.json"])
    except Exception as err:  # offline, unknown repo, no access: one clear line for the user
        raise ValueError(
            f"could not get GPT-2 checkpoint {name_or_path!r} from the Hub ({type(err).__name__}: {err}); "
            "pass a local folder with config.json and model.safetensors"
        ) from err
    return Path(folder)


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    elif (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"no model.safetensors (or sharded index, or pytorch_model.bin) in {folder}")
    state = {}
    for name in files:
        try:
            state.update(load_file(folder / name))
        except Exception as err:
            raise ValueError(f"{folder / name} is not a readable safetensors file ({err})") from err
    return state


def gpt2_config_to_minigpt(gpt2_config: dict, vocab_size: int | None = None) -> MiniGPTConfig:
    """The MiniGPT config of an HF GPT-2 ``config.json`` dict; refuses variants MiniGPT does not implement."""
    if gpt2_config.get("model_type") != "gpt2":
        raise ValueError(f"not a GPT-2 checkpoint: config.json has model_type={gpt2_config.get('model_type')!r}")
    n_embd = gpt2_config["n_embd"]
    unsupported = {
        "activation_function": (gpt2_config.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (gpt2_config.get("n_inner"), (None, 4 * n_embd)),
        "scale_attn_weights": (gpt2_config.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (gpt2_config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "reorder_and_upcast_attn": (gpt2_config.get("reorder_and_upcast_attn", False), (False,)),
        "add_cross_attention": (gpt2_config.get("add_cross_attention", False), (False,)),
    }
    for field, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"GPT-2 config {field}={value!r} is not supported by MiniGPT (allowed: {allowed})")
    source_vocab = gpt2_config["vocab_size"]
    vocab_size = vocab_size or source_vocab
    if vocab_size < source_vocab:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the checkpoint's {source_vocab}")
    return MiniGPTConfig(
        vocab_size=vocab_size,
        tokenizer_vocab_size=source_vocab,
        block_size=gpt2_config["n_positions"],
        n_layer=gpt2_config["n_layer"],
        n_head=gpt2_config["n_head"],
        n_embd=n_embd,
        layer_norm_epsilon=gpt2_config.get("layer_norm_epsilon", 1e-5),
        initializer_range=gpt2_config.get("initializer_range", 0.02),
        bos_token_id=gpt2_config.get("bos_token_id", 50256),
        eos_token_id=gpt2_config.get("eos_token_id", 50256),
    )


def convert_state_dict(gpt2_state: dict[str, torch.Tensor], config: MiniGPTConfig) -> dict[str, torch.Tensor]:
    """Map GPT-2 tensor names/layouts onto MiniGPT's, checking every tensor's presence and shape."""
    state = {}
    for key, tensor in gpt2_state.items():
        if key.endswith(IGNORED_SUFFIXES) or key == "lm_head.weight":  # buffers; the head is tied to wte
            continue
        key = key if key.startswith("transformer.") else f"transformer.{key}"
        state[key] = tensor.t().contiguous() if key.endswith(CONV1D_SUFFIXES) else tensor
    with torch.device("meta"):
        expected = {k: v.shape for k, v in MiniGPTForCausalLM(config).state_dict().items() if k != "lm_head.weight"}
    wte = state.get("transformer.wte.weight")
    if wte is not None and wte.shape[0] < config.vocab_size:
        padding = torch.zeros(config.vocab_size - wte.shape[0], wte.shape[1], dtype=wte.dtype)
        state["transformer.wte.weight"] = torch.cat([wte, padding])
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f"GPT-2 checkpoint is missing tensor {key!r} (expected shape {tuple(shape)})")
        if state[key].shape != shape:
            raise ValueError(
                f"GPT-2 tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(shape)} for this config"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"GPT-2 checkpoint has tensors MiniGPT does not know: {unexpected[:5]}")
    return state


def load_gpt2(name_or_path: str, vocab_size: int | None = None, dtype: torch.dtype = torch.float32):
    """A :class:`MiniGPTForCausalLM` with the weights of an HF GPT-2 checkpoint (hub id or local folder).

    ``vocab_size=50304`` pads the embedding with zero rows (padded ids are never generated).
    """
    folder = _resolve(name_or_path)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(f"no config.json in {folder}; is this a GPT-2 checkpoint folder?")
    config = gpt2_config_to_minigpt(json.loads(config_file.read_text()), vocab_size)
    state = convert_state_dict(_read_state_dict(folder), config)
    with torch.device("meta"):
        model = MiniGPTForCausalLM(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    return model.to(dtype).eval()

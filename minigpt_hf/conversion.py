"""GPT-2 weights (an HF ``gpt2`` / ``gpt2-medium`` / ``gpt2-large`` / ``gpt2-xl`` checkpoint) <-> MiniGPT.

HF's GPT-2 stores its linear layers as ``Conv1D`` (weight shape ``(in, out)``); MiniGPT uses ``nn.Linear``
(``(out, in)``), so those four weights per block are transposed. The causal-mask buffers (``attn.bias``,
``attn.masked_bias``) of old checkpoints are dropped. The 50257-token vocabulary can be padded to 50304 rows.
The way back (:func:`to_gpt2_model`, :func:`export_gpt2`) drops the padding rows again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .configuration_minigpt import MiniGPTConfig

if TYPE_CHECKING:  # the model calls into this module (from_gpt2, to_gpt2), never the other way round
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


def convert_state_dict(gpt2_state: dict[str, torch.Tensor], config: MiniGPTConfig, model_class) -> dict[str, torch.Tensor]:
    """Map GPT-2 tensor names/layouts onto those of ``model_class(config)``, checking every tensor's presence and
    shape."""
    state = {}
    for key, tensor in gpt2_state.items():
        if key.endswith(IGNORED_SUFFIXES) or key == "lm_head.weight":  # buffers; the head is tied to wte
            continue
        key = key if key.startswith("transformer.") else f"transformer.{key}"
        state[key] = tensor.t().contiguous() if key.endswith(CONV1D_SUFFIXES) else tensor
    with torch.device("meta"):
        expected = {k: v.shape for k, v in model_class(config).state_dict().items() if k != "lm_head.weight"}
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


def load_gpt2(model_class, name_or_path: str, vocab_size: int | None = None, dtype: torch.dtype = torch.float32):
    """A ``model_class`` (:class:`MiniGPTForCausalLM`) with the weights of an HF GPT-2 checkpoint (hub id or local
    folder); ``MiniGPTForCausalLM.from_gpt2`` calls this.

    ``vocab_size=50304`` pads the embedding with zero rows (padded ids are never generated).
    """
    folder = _resolve(name_or_path)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(f"no config.json in {folder}; is this a GPT-2 checkpoint folder?")
    config = gpt2_config_to_minigpt(json.loads(config_file.read_text()), vocab_size)
    state = convert_state_dict(_read_state_dict(folder), config, model_class)
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    return model.to(dtype).eval()


# ---------------------------------------------------------------------------------------------- MiniGPT -> GPT-2
# The way out: a MiniGPT is GPT-2 with the vocabulary padded from 50257 to 50304 rows. The padded ids are masked (never
# predicted), so dropping those rows gives a GPT2LMHeadModel with the same logits for every real token. The result
# loads in stock transformers (no trust_remote_code) and in tools that read the GPT-2 format (vLLM, llama.cpp's
# convert_hf_to_gguf.py, TGI, ONNX exporters, lm-eval).

GPT2_VOCAB = 50257


def check_gpt2_exportable(config: MiniGPTConfig) -> None:
    """``ValueError`` naming the first config field the plain GPT-2 format cannot represent, and what to do."""
    refusals = [
        (not config.bias, "bias=False", "GPT-2 has a bias in every Linear and LayerNorm; train with bias=True"),
        (config.mlp_ratio != 4, f"mlp_ratio={config.mlp_ratio}", "GPT-2's MLP is 4 * n_embd wide; use mlp_ratio=4"),
        (
            not config.tie_word_embeddings,
            "tie_word_embeddings=False",
            "GPT-2 ties the LM head to the token embedding; export needs a model trained with tied embeddings",
        ),
        (
            config.tokenizer_vocab_size != GPT2_VOCAB,
            f"tokenizer_vocab_size={config.tokenizer_vocab_size}",
            f"GPT-2's BPE vocabulary has {GPT2_VOCAB} tokens; only models over that tokenizer can be exported",
        ),
        (
            config.vocab_size < config.tokenizer_vocab_size,
            f"vocab_size={config.vocab_size} < tokenizer_vocab_size={config.tokenizer_vocab_size}",
            "the embedding lacks rows for real tokens; fix the config (vocab_size >= 50257)",
        ),
    ]
    for refused, field, fix in refusals:
        if refused:
            raise ValueError(f"cannot export to GPT-2: {field}; {fix}")


def minigpt_config_to_gpt2(config: MiniGPTConfig):
    """The ``transformers.GPT2Config`` of a MiniGPT config: vocabulary 50257 (padding dropped), same shape, dropout
    on residual, embedding and attention, GPT-2's tanh GELU (``gelu_new``)."""
    from transformers import GPT2Config

    check_gpt2_exportable(config)
    return GPT2Config(
        vocab_size=config.tokenizer_vocab_size,
        n_positions=config.block_size,
        n_ctx=config.block_size,  # unused by transformers; llama.cpp's converter reads it (gpt2's own config has it)
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )


def minigpt_state_dict_to_gpt2(state: dict[str, torch.Tensor], config: MiniGPTConfig) -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_state_dict`: MiniGPT tensors -> ``GPT2LMHeadModel`` names and layouts (Conv1D
    weights transposed, the embedding cut to the tokenizer's rows, the head tied). Every tensor is a fresh copy."""
    check_gpt2_exportable(config)
    wte = state["transformer.wte.weight"]
    head = state.get("lm_head.weight")
    if head is not None and head.data_ptr() != wte.data_ptr() and not torch.equal(head, wte):
        raise ValueError(
            "cannot export to GPT-2: lm_head.weight differs from transformer.wte.weight (untied embeddings); "
            "GPT-2 ties them, so export needs a model trained with tied embeddings"
        )
    out = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        if key == "transformer.wte.weight":
            tensor = tensor[: config.tokenizer_vocab_size]  # rows beyond are masked vocabulary padding
        elif key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        out[key] = tensor.detach().contiguous().clone()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_gpt2_model(model: "MiniGPTForCausalLM"):
    """A ``transformers.GPT2LMHeadModel`` with the weights of ``model`` (same dtype; its own copy of every tensor)."""
    from transformers import GPT2LMHeadModel

    gpt2_config = minigpt_config_to_gpt2(model.config)
    state = minigpt_state_dict_to_gpt2(model.state_dict(), model.config)
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(gpt2_config)
    expected = set(gpt2.state_dict())
    if set(state) != expected:  # a MiniGPT that grew a tensor GPT-2 lacks (or vice versa): never export silently
        raise ValueError(
            f"cannot export to GPT-2: tensors differ (MiniGPT only: {sorted(set(state) - expected)[:5]}, "
            f"GPT-2 only: {sorted(expected - set(state))[:5]}); merge LoRA adapters first (merge_and_unload)"
        )
    gpt2.load_state_dict(state, strict=True, assign=True)
    gpt2.tie_weights()
    if any(t.is_meta for t in [*gpt2.parameters(), *gpt2.buffers()]):
        raise RuntimeError("GPT-2 export left tensors unset (a transformers GPT-2 with new buffers?); please report")
    return gpt2.train(model.training)


def _load_minigpt(path) -> "MiniGPTForCausalLM":
    """A saved MiniGPT folder, checked for exportability from its config before any weight is read."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such MiniGPT checkpoint folder; pass the folder that holds config.json")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing; pass a MiniGPT checkpoint folder (a save_pretrained output)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a readable config ({err}); pass a MiniGPT checkpoint folder") from None
    if model_type != MiniGPTConfig.model_type:
        raise ValueError(
            f"{folder} is not a MiniGPT checkpoint (config.json has model_type={model_type!r}); "
            + ("it is already in GPT-2 format" if model_type == "gpt2" else "pass a folder saved by minigpt_hf")
        )
    check_gpt2_exportable(MiniGPTConfig.from_pretrained(folder))
    from transformers import AutoModelForCausalLM  # MiniGPT is registered with it when minigpt_hf is imported

    return AutoModelForCausalLM.from_pretrained(folder)


def export_gpt2(checkpoint_or_model, out_dir, overwrite: bool = False) -> Path:
    """Write ``out_dir``: a plain GPT-2 checkpoint (``config.json`` with ``model_type: gpt2``, ``model.safetensors``,
    ``generation_config.json``, GPT-2 tokenizer files) that stock transformers loads as ``GPT2LMHeadModel`` with no
    custom code. ``checkpoint_or_model`` is a :class:`MiniGPTForCausalLM` or a saved MiniGPT folder.

    Written atomically (complete or not at all), with a ``COMPLETE`` marker holding every file's sha256 (which
    tools other than minigpt_hf ignore); an existing ``out_dir`` is a ``FileExistsError`` unless ``overwrite``,
    and then the new folder takes its place in one step (:func:`minigpt_hf.checkpoint.atomic_directory`).
    ``ValueError`` for a model GPT-2 cannot represent (``bias=False``, ``mlp_ratio != 4``, untied embeddings, a
    vocabulary other than GPT-2's 50257 tokens plus padding).
    """
    from .checkpoint import atomic_directory, mark_complete, recording
    from .tokenization import ASSET_DIR, get_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:  # before loading anything: fail fast, keep the old folder
        raise FileExistsError(
            f"{out_dir} already exists; choose another output folder or pass --overwrite"
        )
    if isinstance(checkpoint_or_model, torch.nn.Module):  # also the trust_remote_code copy of the class
        model = checkpoint_or_model
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type != MiniGPTConfig.model_type:
            raise ValueError(
                f"export_gpt2 needs a MiniGPT model, got {type(model).__name__} (model_type={model_type!r})"
            )
    elif isinstance(checkpoint_or_model, (str, os.PathLike)):
        if Path(checkpoint_or_model).resolve() == out_dir.resolve():
            raise ValueError(f"{out_dir} is the checkpoint being exported; choose another output folder")
        model = _load_minigpt(checkpoint_or_model)
    else:
        raise TypeError(
            f"export_gpt2 takes a MiniGPTForCausalLM or a checkpoint folder, got {type(checkpoint_or_model).__name__}"
        )
    gpt2 = to_gpt2_model(model)
    tokenizer = get_tokenizer(model_max_length=gpt2.config.n_positions)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp, recording(tmp, out_dir) as written:
        gpt2.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in ("vocab.json", "merges.txt"):  # GPT-2's own files, for tools that read these, not tokenizer.json
            with written.writer(tmp / name) as f:
                f.write((ASSET_DIR / name).read_bytes())
        mark_complete(tmp, hashes=written.files)
    return out_dir

"""MiniGPT configuration: GPT-2 small as in the notes, as a ``transformers`` config.

This file is copied next to saved weights (``trust_remote_code`` loading), so it imports only ``transformers`` and
``presets.py`` (copied with it).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from .presets import PRESETS


@strict
class MiniGPTConfig(PretrainedConfig):
    r"""Configuration of a GPT-2 style decoder (:class:`MiniGPTForCausalLM`).

    Defaults are the notes' GPT-2 small: 12 layers, 12 heads, 768 wide, context 1024, vocabulary padded to 50304.

    Args:
        vocab_size: rows of the embedding / LM head. 50304 (a multiple of 128) is GPT-2's 50257 padded for speed.
        tokenizer_vocab_size: ids the tokenizer can produce (50257 for GPT-2). Ids from here to ``vocab_size`` are
            padding: their logits are set to the lowest value, so they are never sampled or generated.
        block_size: context length (learned positions). Standard name: ``max_position_embeddings``.
        n_layer, n_head, n_embd: depth, heads and width (``num_hidden_layers``, ``num_attention_heads``,
            ``hidden_size``); ``n_embd`` must be divisible by ``n_head``.
        mlp_ratio: the MLP hidden width is ``mlp_ratio * n_embd`` (3072 for GPT-2 small).
        bias: biases in Linear layers and LayerNorms, as GPT-2.
        dropout: on embeddings, attention and residual outputs; 0.0 for pre-training, in [0, 1).
        layer_norm_epsilon, initializer_range: 1e-5 and 0.02, as GPT-2.
        loss_chunk_size: when > 0, a forward with labels in training mode computes the loss over chunks of this many
            tokens without materialising the (batch, seq, vocab) logits (a memory lever; no logits are returned
            then). In eval mode the model always returns logits.
    """

    model_type = "minigpt"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "block_size",
    }

    vocab_size: int = 50304
    tokenizer_vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_ratio: int = 4
    bias: bool = True
    dropout: float | int = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    loss_chunk_size: int = 0
    use_cache: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = 50256

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("vocab_size", "tokenizer_vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MiniGPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"MiniGPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"allowed n_head values for this width: {[h for h in range(1, 65) if self.n_embd % h == 0]}"
            )
        if self.loss_chunk_size < 0:
            raise ValueError(f"MiniGPTConfig.loss_chunk_size must be >= 0 (0 = off), got {self.loss_chunk_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MiniGPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.vocab_size < self.tokenizer_vocab_size:
            raise ValueError(
                f"MiniGPTConfig.vocab_size ({self.vocab_size}) is smaller than tokenizer_vocab_size "
                f"({self.tokenizer_vocab_size}); use vocab_size >= {self.tokenizer_vocab_size} (50304 for GPT-2 BPE), "
                "or lower tokenizer_vocab_size for a smaller tokenizer"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MiniGPTConfig":
        """A config from a named shape (see ``PRESETS``), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown MiniGPT preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["MiniGPTConfig", "PRESETS"]

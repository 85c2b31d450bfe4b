"""MiniGPT: the GPT-2 decoder of nanoGPT, as a native ``transformers`` causal LM.

Read top to bottom: attention, MLP, block, the model, the LM head. Parameter names are GPT-2's, so state dicts map
one-to-one onto nanoGPT's and (after the Conv1D transpose) onto ``GPT2LMHeadModel``'s. Attention goes through
transformers' attention interface (``config._attn_implementation``: "sdpa" by default, "eager", "flash_attention_2",
"flex_attention", hub kernels) with the mask ``create_causal_mask`` builds for it. This file is copied next to saved
weights for ``trust_remote_code`` loading, so it imports only torch, transformers and the config.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, logging

from .configuration_minigpt import MiniGPTConfig

logger = logging.get_logger(__name__)

# transformers 5.x renamed the cache argument and output field from `past_key_values` to `cache`; both are accepted,
# and outputs use whichever name the installed version's generate() reads back.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def eager_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """softmax(q·kᵀ·scale + mask)·v in plain matmuls: the reference path, and the one that returns the attention
    weights (``output_attentions``). The mask is additive (0 = attend, the dtype's minimum = hidden), as
    ``create_causal_mask`` builds it for "eager"; a boolean 4-D mask passed by the caller is converted."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros_like(attention_mask, dtype=scores.dtype).masked_fill(
                ~attention_mask, torch.finfo(scores.dtype).min
            )
        scores = scores + attention_mask[..., : key.shape[-2]]
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused QKV projection, then the configured attention implementation."""

    def __init__(self, config: MiniGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config  # the attention interface reads the implementation (and flash its dtype) from here
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.scaling = (config.n_embd // config.n_head) ** -0.5
        self.is_causal = True
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attention_mask=None, cache=None, **kwargs):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        y, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        y = y.reshape(B, T, C)  # every implementation returns (B, T, heads, head_dim)
        return self.resid_dropout(self.c_proj(y)), weights


class MLP(nn.Module):
    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(GradientCheckpointingLayer):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Also returns the attention weights
    (None unless the implementation is "eager")."""

    def __init__(self, config: MiniGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attention_mask=None, cache=None, use_cache=False, **kwargs):
        a, weights = self.attn(self.ln_1(x), attention_mask, cache, **kwargs)
        x = x + a
        return x + self.mlp(self.ln_2(x)), weights


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` without materialising the (N, V) logits of the whole batch.

    Rows are processed in chunks: each chunk's logits live only while its loss and its gradients with respect to
    ``hidden`` and ``weight`` are computed (in the forward pass, so backward only scales them). Peak memory for the
    head drops from N*V fp32 values to chunk*V. Logits of padded vocabulary ids (>= ``n_real``) are excluded, exactly
    as the model's masking does. ``divisor`` is the number of target tokens the sum is divided by.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, n_real, divisor, ignore_index=-100):
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
            logits = (h @ weight.t()).float()
            logits[:, n_real:] = torch.finfo(torch.float32).min
            valid = t != ignore_index
            safe_t = t.masked_fill(~valid, 0)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, safe_t[:, None]).squeeze(1)) * valid).sum()
            grad = torch.softmax(logits, dim=-1)
            grad[torch.arange(len(t), device=t.device), safe_t] -= 1.0
            grad = (grad * (valid[:, None] / divisor)).to(h.dtype)
            grad_hidden[start : start + chunk_size] = grad @ weight
            grad_weight += grad.t() @ h
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None, None, None


class CausalLMCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(logits.float().view(-1, V), targets, ignore_index=ignore_index, reduction=...)`` -- the loss of
    transformers' ``ForCausalLMLoss`` -- bit for bit in the loss and in the gradient, in fewer (N, V) buffers.

    The same kernels run on the same values: ``log_softmax`` and ``nll_loss_forward``; in backward
    ``nll_loss_backward`` and ``_log_softmax_backward_data``. What differs is where they write. torch's backward
    allocates a zero-filled (N, V) gradient for ``nll_loss`` and another (N, V) tensor for ``log_softmax``'s
    gradient; here both are computed a block of rows at a time (both kernels work row by row), the first into a small
    scratch buffer, the second over the saved log-probabilities, which nothing else reads. The log-probabilities
    themselves are written over the fp32 upcast of 16-bit logits (a private copy), or, with ``overwrite_logits``
    (the caller never sees the logits), over the logits; otherwise into a new tensor, so the caller's logits are
    never changed. On a CPU each fresh buffer of that size (400 MB at N = 2048, V = 50304) costs more in page faults
    than in arithmetic. One backward per forward: the saved log-probabilities are used up (autograd then refuses a
    second pass through ``retain_graph``)."""

    BLOCK_BYTES = {"cpu": 1 << 20}  # scratch per block of rows: about an L2 cache on a CPU; 256 MB elsewhere

    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int, reduction: int, overwrite_logits: bool = False):
        x = logits.detach().reshape(-1, logits.shape[-1]).float()
        private = overwrite_logits or x.data_ptr() != logits.data_ptr()
        logp = torch.log_softmax(x, 1, out=x) if private else torch.log_softmax(x, 1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(logp, targets, None, reduction, ignore_index)
        ctx.save_for_backward(logp, targets, total_weight)
        ctx.ignore_index, ctx.reduction, ctx.shape, ctx.dtype = ignore_index, reduction, logits.shape, logits.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        try:
            logp, targets, total_weight = ctx.saved_tensors
        except RuntimeError as err:  # autograd's check: the saved log-probabilities were used up by a first pass
            raise RuntimeError(
                "MiniGPT's loss takes one backward pass per forward (its gradient is written over the saved "
                "log-probabilities): run the forward again rather than a second backward through a retained graph"
            ) from err
        n, v = logp.shape
        rows = max(1, CausalLMCrossEntropy.BLOCK_BYTES.get(logp.device.type, 1 << 28) // (v * logp.element_size()))
        scratch = logp.new_empty((min(rows, n), v))
        for start in range(0, n, rows):
            lp, t = logp[start : start + rows], targets[start : start + rows]
            grad_nll = torch.ops.aten.nll_loss_backward.grad_input(
                grad_loss, lp, t, None, ctx.reduction, ctx.ignore_index, total_weight, grad_input=scratch[: len(t)]
            )
            torch.ops.aten._log_softmax_backward_data.out(grad_nll, lp, 1, torch.float32, out=lp)
        return logp.view(ctx.shape).to(ctx.dtype), None, None, None, None


class MiniGPTPreTrainedModel(PreTrainedModel):
    config_class = MiniGPTConfig
    config: MiniGPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _supports_flash_attn = True  # fused QKV, no bias in the scores: any kernel that takes (q, k, v, mask) fits
    _supports_flex_attn = True
    _supports_attention_backend = True  # kwargs reach the attention function (hub kernels, flash varlen arguments)
    _can_compile_fullgraph = True
    _keys_to_ignore_on_load_unexpected = [r"attn\.bias", r"attn\.masked_bias"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As transformers', and a folder written for ``trust_remote_code`` names the bare decoder for ``AutoModel``
        too, whichever class was saved."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": f"{module}.MiniGPTModel"}
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        """nanoGPT's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class MiniGPTModel(MiniGPTPreTrainedModel):
    """Token + learned position embeddings, ``n_layer`` pre-LN blocks, final LayerNorm."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if output_attentions and self.config._attn_implementation != "eager":  # transformers' contract: warn, go on
            logger.warning_once(
                f"output_attentions=True: the {self.config._attn_implementation!r} attention implementation returns "
                'no attention weights, so `attentions` is empty; load the model with attn_implementation="eager" (or '
                'call model.set_attn_implementation("eager")) to get them'
            )
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if not use_cache:
            cache = None

        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        T = x.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        self._check_positions(past + T, position_ids)
        # The mask the configured implementation needs: padding, a cache, documents packed in one row (position_ids
        # restarting at 0, no mask, no cache). None when SDPA's is_causal alone is right: no padding, no cache.
        mask = create_causal_mask(self.config, x, attention_mask, cache, position_ids)
        if use_cache and cache is None:
            cache = DynamicCache()
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = (torch.arange(T, device=x.device) + past)[None]

        x = self.drop(x + self.wpe(position_ids))
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for block in self.h:
            x, weights = block(x, mask, cache=cache, use_cache=use_cache, position_ids=position_ids, **kwargs)
            if output_hidden_states:
                hidden_states += (x,)
            if output_attentions and self.config._attn_implementation == "eager":  # others: (), as GPT-2's
                attentions += (weights,)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden_states = hidden_states[:-1] + (x,)
        return BaseModelOutputWithPast(
            last_hidden_state=x, hidden_states=hidden_states, attentions=attentions, **{CACHE_FIELD: cache}
        )

    def _check_positions(self, length, position_ids):
        """Positions index the learned table of ``block_size`` rows: a clear error past it. Packed rows may be longer
        than ``block_size`` as long as each document's positions fit, so explicit ``position_ids`` are read, but only
        when the row is too long to fit anyway. Compiled and exported graphs skip this (a data-dependent branch)."""
        if torch.compiler.is_compiling() or length <= self.config.block_size:
            return
        longest = length if position_ids is None else int(position_ids.max()) + 1
        if longest > self.config.block_size:
            raise ValueError(
                f"sequence of {longest} tokens is longer than the model's block_size ({self.config.block_size}); "
                "truncate the input or generate fewer tokens"
            )


class MiniGPTForCausalLM(MiniGPTPreTrainedModel, GenerationMixin):
    """MiniGPT with the LM head tied to the token embedding. ``labels`` follow HF: pass ``labels=input_ids``; the
    shift happens inside (or pass already shifted targets as ``shift_labels``); -100 is ignored."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: MiniGPTConfig):
        super().__init__(config)
        self.transformer = MiniGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        return_logits: bool = True,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        return_logits (`bool`, defaults to `True`):
            `False` with `labels` or `shift_labels`: return the loss only (`logits` is None). The loss and the
            gradients are the same, bit for bit; the loss then works in the logits' own buffer, so a step needs one
            (batch, seq, vocab) buffer fewer. The trainer's step passes `False`.
        """
        has_labels = labels is not None or kwargs.get("shift_labels") is not None
        if not return_logits and not has_labels:
            raise ValueError("return_logits=False returns the loss only: pass labels or shift_labels too")
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden = out.last_hidden_state
        extras = {"hidden_states": out.hidden_states, "attentions": out.attentions, CACHE_FIELD: out.get(CACHE_FIELD)}
        chunked = self.config.loss_chunk_size and self.training  # evaluation and inference always get logits
        if chunked and has_labels:
            return CausalLMOutputWithPast(loss=self._chunked_loss(hidden, labels, **kwargs), **extras)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        n_real = self.config.tokenizer_vocab_size
        if n_real < logits.shape[-1]:  # vocabulary padding is never a prediction
            with torch.no_grad():  # the gradient there is exactly 0 anyway; recording the fill costs a (B, T, V) copy
                logits[..., n_real:] = torch.finfo(logits.dtype).min
        loss = None
        if kwargs.get("shift_labels") is not None:  # (B, T+1) windows give non-contiguous targets; HF's loss views
            kwargs["shift_labels"] = kwargs["shift_labels"].contiguous()
        if has_labels:
            if self._fast_loss_applies(logits, return_logits):
                loss = self._fast_loss(logits, labels, overwrite_logits=not return_logits, **kwargs)
            else:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits if return_logits else None, **extras)

    def _fast_loss_applies(self, logits, return_logits: bool) -> bool:
        """Whether :meth:`_fast_loss` stands in for ``self.loss_function``: transformers' default causal-LM loss (not
        replaced), eager (compiled graphs keep the plain ops, for the compiler to fuse; so do torch.func transforms,
        which the autograd.Function does not support), and either a backward pass to follow or logits nobody will
        read."""
        return (self.loss_function is ForCausalLMLoss and not torch.compiler.is_compiling()
                and not torch._C._are_functorch_transforms_active()
                and (not return_logits or (logits.requires_grad and torch.is_grad_enabled())))

    def _fast_loss(self, logits, labels=None, shift_labels=None, num_items_in_batch=None, ignore_index=-100,
                   overwrite_logits=False, **_):
        """``ForCausalLMLoss`` step by step, its cross-entropy through :class:`CausalLMCrossEntropy`: the same loss
        and gradients, bit for bit, in fewer (B*T, V) buffers."""
        if shift_labels is None:  # tokens < n predict n
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:].contiguous()
        targets = shift_labels.view(-1).to(logits.device)
        reduction = 1 if num_items_in_batch is None else 2  # torch's Reduction: 1 mean, 2 sum
        loss = CausalLMCrossEntropy.apply(logits, targets, ignore_index, reduction, overwrite_logits)
        if num_items_in_batch is not None:  # as transformers' fixed_cross_entropy
            loss = loss / (num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch)
                           else num_items_in_batch)
        return loss

    def _chunked_loss(self, hidden, labels=None, shift_labels=None, num_items_in_batch=None, ignore_index=-100, **_):
        """The HF causal-LM loss through :class:`ChunkedLinearCrossEntropy` (``config.loss_chunk_size`` > 0, training
        mode): no logits are returned, and the (B, T, V) logits are never materialised."""
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        targets = shift_labels.reshape(-1).to(hidden.device)
        divisor = num_items_in_batch if num_items_in_batch is not None else (targets != ignore_index).sum()
        return ChunkedLinearCrossEntropy.apply(
            hidden.reshape(-1, hidden.shape[-1]),
            self.lm_head.weight,
            targets,
            self.config.loss_chunk_size,
            self.config.tokenizer_vocab_size,
            divisor,
            ignore_index,
        )

    def optimizer_groups(self, weight_decay: float = 0.1) -> list[dict]:
        """AdamW parameter groups as nanoGPT: every weight of 2+ dimensions (Linear weights, embeddings) decays;
        biases and LayerNorm parameters do not. For GPT-2 small: 50 tensors / 124,354,560 decayed and
        98 tensors / 121,344 not (the tied LM head counts once)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    @classmethod
    def from_gpt2(cls, name_or_path: str, **kwargs) -> "MiniGPTForCausalLM":
        """Load OpenAI GPT-2 weights from an HF ``gpt2*`` checkpoint (hub id or local folder); see ``conversion``."""
        try:  # the converter lives in the package, not in this file's trust_remote_code copy
            from minigpt_hf.conversion import load_gpt2
        except ImportError as err:
            raise ImportError("from_gpt2 needs the minigpt_hf package: pip install minigpt-hf") from err

        return load_gpt2(cls, name_or_path, **kwargs)

    def to_gpt2(self):
        """This model as a ``transformers.GPT2LMHeadModel`` (vocabulary padding dropped); see ``conversion``."""
        try:  # the converter lives in the package, not in this file's trust_remote_code copy
            from minigpt_hf.conversion import to_gpt2_model
        except ImportError as err:
            raise ImportError("to_gpt2 needs the minigpt_hf package: pip install minigpt-hf") from err

        return to_gpt2_model(self)


__all__ = ["MiniGPTForCausalLM", "MiniGPTModel", "MiniGPTPreTrainedModel"]

"""The fast loss path (issue 20), pinned bit for bit.

``training.train_step`` calls ``model(x, shift_labels=y, return_logits=False)``; the model then computes
transformers' causal-LM loss through ``CausalLMCrossEntropy`` (torch's own kernels, writing into fewer
(B*T, V) buffers). Everything here is compared with ``torch.equal``: the loss, every gradient, the clipped norm and
the weights after the AdamW step equal a plain computation (``F.cross_entropy`` over the logits, padded vocabulary
columns at the dtype's minimum) and the model's previous path (transformers' ``ForCausalLMLoss``). Also: the step
allocates one logits-sized buffer where the plain loss allocates four, the logits a caller gets are never written,
the chunked loss still trains, torch.func transforms and the compiled step (one graph) take the plain loss.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers.loss.loss_utils import ForCausalLMLoss

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf import training

B, T, V = 4, 32, 50304


def tiny_model(**overrides):
    torch.manual_seed(0)
    config = MiniGPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=64, block_size=64), **overrides})
    return MiniGPTForCausalLM(config).train()


def hf_loss(**kwargs):
    """transformers' loss under another name: the model then takes its generic path (as before issue 20)."""
    return ForCausalLMLoss(**kwargs)


def windows(seed=1):
    w = torch.randint(0, 50257, (B, T + 1), generator=torch.Generator().manual_seed(seed))
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class Loader:
    """What train_step reads: next_batch() -> (x, y)."""

    def __init__(self, *batches):
        self.batches = list(batches)

    def next_batch(self):
        return self.batches.pop(0)


def plain_loss(model, x, y):
    """The loss as the model defines it, written out: logits from the tied head, the padded vocabulary ids at the
    dtype's minimum (never a prediction), F.cross_entropy over all V columns."""
    hidden = model.transformer(x).last_hidden_state
    logits = F.linear(hidden, model.lm_head.weight)
    padded = torch.arange(V) >= model.config.tokenizer_vocab_size
    logits = logits.masked_fill(padded, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits.view(-1, V), y.reshape(-1))


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_train_step_equals_the_plain_loss_bit_for_bit(grad_accum):
    """The trainer's own step (real Accelerator, AdamW as setup() builds it) against the recipe by hand: the same
    loss, raw gradients, clipped norm and weights after the step, bit for bit."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    batches = [windows(seed) for seed in range(grad_accum)]
    accelerator = Accelerator(cpu=True)
    accelerator.gradient_accumulation_steps = grad_accum
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    raw = {}  # the gradients backward left, before clipping
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, name=name: raw.__setitem__(name, p.grad.clone()))
    loss, norm, skipped = training.train_step(prepared, optimizer, Loader(*batches), accelerator, grad_accum, 6e-4,
                                              1.0)

    ref_optimizer = torch.optim.AdamW(reference.optimizer_groups(0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    ref_loss = torch.zeros(())
    for x, y in batches:
        micro = plain_loss(reference, x, y)
        ref_loss += micro.detach() / grad_accum
        (micro / grad_accum).backward()
    ref_raw = grads(reference)
    ref_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    ref_optimizer.step()

    assert not skipped
    assert torch.equal(loss, ref_loss) and torch.equal(norm, ref_norm)
    assert_equal(raw, ref_raw)
    assert_equal(dict(model.named_parameters()), dict(reference.named_parameters()))


CASES = {
    "shift_labels": lambda x, y: dict(input_ids=x, shift_labels=y),
    "labels": lambda x, y: dict(input_ids=x, labels=x),
    "ignored targets": lambda x, y: dict(input_ids=x, shift_labels=y.masked_fill(y % 3 == 0, -100)),
    "num_items_in_batch": lambda x, y: dict(input_ids=x, labels=x, num_items_in_batch=torch.tensor(100)),
}


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("return_logits", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_fast_loss_equals_transformers_loss_bit_for_bit(case, return_logits, amp):
    """Loss and every gradient equal the generic path's (transformers' ForCausalLMLoss); the logits returned are
    those of a forward without labels, and backward leaves them untouched."""
    fast, generic = tiny_model(), tiny_model()
    generic.loss_function = hf_loss
    kwargs = CASES[case](*windows())
    outputs = {}
    for name, model in (("fast", fast), ("generic", generic)):
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            out = model(**kwargs, return_logits=return_logits if name == "fast" else True)
        logits = None if out.logits is None else out.logits.detach().clone()
        out.loss.backward()
        outputs[name] = (out, logits)
    (out, before), (expected, expected_logits) = outputs["fast"], outputs["generic"]
    assert torch.equal(out.loss, expected.loss)
    assert_equal(grads(fast), grads(generic))
    if return_logits:
        assert torch.equal(before, expected_logits) and torch.equal(out.logits, expected_logits)
        assert (out.logits[..., 50257:] == torch.finfo(out.logits.dtype).min).all()
    else:
        assert out.logits is None


def test_loss_only_without_gradients_equals_transformers_loss():
    """Evaluation-style calls (no_grad, eval mode) with return_logits=False give transformers' loss exactly."""
    fast, generic = tiny_model().eval(), tiny_model().eval()
    generic.loss_function = hf_loss
    x, y = windows()
    with torch.no_grad():
        assert torch.equal(fast(x, shift_labels=y, return_logits=False).loss, generic(x, shift_labels=y).loss)


class LogitsSizedBuffers(TorchDispatchMode):
    """Counts the new buffers of at least B*T*V elements that aten ops create (views and out= results excluded)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)}
        self.count += sum(t.numel() >= B * T * V and t.untyped_storage().data_ptr() not in inputs
                          for t in tree_flatten(out)[0] if torch.is_tensor(t))
        return out


def logits_sized_buffers(step) -> int:
    with LogitsSizedBuffers() as counter:
        step()
    return counter.count


def test_the_trainer_step_allocates_one_logits_sized_buffer():
    """The plain loss makes four (B*T, V) fp32 buffers per step (logits, log-probabilities, nll_loss's zero-filled
    gradient, log_softmax's gradient); returning logits, the fast path makes two; the trainer's step makes one."""
    x, y = windows()
    generic = tiny_model()
    generic.loss_function = hf_loss
    assert logits_sized_buffers(lambda: generic(x, shift_labels=y).loss.backward()) == 4
    fast = tiny_model()
    assert logits_sized_buffers(lambda: fast(x, shift_labels=y).loss.backward()) == 2
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(fast.optimizer_groups(0.1), lr=6e-4)
    prepared, optimizer = accelerator.prepare(fast, optimizer)
    step = lambda: training.train_step(prepared, optimizer, Loader((x, y)), accelerator, 1, 6e-4, 1.0)  # noqa: E731
    assert logits_sized_buffers(step) == 1


def test_a_second_backward_through_the_fast_loss_is_refused_clearly():
    model = tiny_model()
    x, y = windows()
    loss = model(x, shift_labels=y).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward"):
        loss.backward()


def test_return_logits_false_needs_labels():
    x, _ = windows()
    with pytest.raises(ValueError, match="pass labels or shift_labels"):
        tiny_model()(x, return_logits=False)


def test_torch_func_transforms_take_the_plain_loss():
    """torch.func.grad through the model (per-sample gradients, meta-learning) works: the fast path steps aside."""
    model = tiny_model()
    x, y = windows()
    params = {name: p.detach() for name, p in model.named_parameters()}
    loss = lambda p: torch.func.functional_call(model, p, (x,), {"shift_labels": y}).loss  # noqa: E731
    grad = torch.func.grad(loss)(params)
    model(x, shift_labels=y).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grad[name], p.grad, msg=name)


def test_the_chunked_loss_still_trains_through_train_step():
    """--loss_chunk_size: train_step's loss-only call takes the chunked path, which stays close to the plain loss."""
    x, y = windows()
    model = tiny_model(loss_chunk_size=48)
    expected = plain_loss(copy.deepcopy(model), x, y)
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=6e-4)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    loss, norm, _ = training.train_step(prepared, optimizer, Loader((x, y)), accelerator, 1, 6e-4, 1.0)
    torch.testing.assert_close(loss, expected.detach())
    assert torch.isfinite(norm)


@pytest.mark.slow
def test_the_compiled_loss_only_step_is_one_graph():
    """Under torch.compile the model keeps transformers' plain loss ops (for inductor to fuse): fullgraph, and the
    loss and gradients match eager's fast path."""
    torch._dynamo.reset()
    compiled_model, eager = tiny_model(), tiny_model()
    x, y = windows()
    out = torch.compile(compiled_model, fullgraph=True)(x, shift_labels=y, return_logits=False)
    assert out.logits is None
    out.loss.backward()
    expected = eager(x, shift_labels=y, return_logits=False).loss
    expected.backward()
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    torch._dynamo.reset()

"""torch.compile(fullgraph=True), torch.export and ONNX: no graph breaks, and the compiled/exported graphs match eager.

CPU inductor on a 2-layer, 64-wide model; the compile tests take 5-20 s each."""

import pytest
import torch
from torch.export import Dim
from transformers import StaticCache
from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM


def tiny_config(**overrides):
    return MiniGPTConfig(**{**dict(n_layer=2, n_head=4, n_embd=64, block_size=64), **overrides})


def tiny_model():
    torch.manual_seed(0)
    return MiniGPTForCausalLM(tiny_config()).eval()


def ids(batch=2, length=12, seed=1):
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_padded(x, pad=(3, 0)):
    mask = torch.ones_like(x)
    for row, n in enumerate(pad):
        mask[row, :n] = 0
    return x.masked_fill(mask == 0, 50256), mask


class Logits(torch.nn.Module):
    """The forward as a function of tensors only (what export and ONNX take)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask=attention_mask, use_cache=False).logits


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_training_step_is_one_graph():
    model = tiny_model().train()
    eager = tiny_model().train()
    x = ids(length=16)
    compiled = torch.compile(model, fullgraph=True)  # any graph break is an error
    loss = compiled(x, labels=x).loss
    loss.backward()
    expected = eager(x, labels=x).loss
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_compiled_forward_with_a_padding_mask_is_one_graph():
    model = tiny_model()
    x, mask = left_padded(ids())
    with torch.no_grad():
        got = torch.compile(model, fullgraph=True)(x, attention_mask=mask, use_cache=False).logits
        expected = model(x, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    assert (got - expected)[real].abs().max().item() <= 1e-5


@pytest.mark.slow
def test_compiled_static_cache_decode_step_is_one_graph_and_never_recompiles():
    model = tiny_model()
    cfg = model.config
    x, mask = left_padded(ids(length=8), pad=(2, 0))
    length = 32  # the 2-D mask spans the whole static cache, so every decode step has the same shapes
    full_mask = torch.cat([mask, torch.zeros(2, length - 8, dtype=mask.dtype)], 1)
    caches = StaticCache(config=cfg, max_cache_len=length), StaticCache(config=cfg, max_cache_len=length)
    step = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for cache in caches:
            out = model(x, attention_mask=mask, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        for i in range(3):
            full_mask[:, 8 + i] = 1
            positions = full_mask.sum(-1, keepdim=True) - 1
            kwargs = dict(attention_mask=full_mask, position_ids=positions, use_cache=True)
            if i > 0:
                torch.compiler.set_stance("fail_on_recompile")
            try:
                got = step(token, cache=caches[0], **kwargs).logits
            finally:
                torch.compiler.set_stance("default")
            expected = model(token, cache=caches[1], **kwargs).logits
            assert (got - expected).abs().max().item() <= 1e-5
            token = got[:, -1:].argmax(-1)


def test_the_length_check_is_not_in_the_graph():
    """Eager callers get a ValueError for positions past block_size; dynamo traces no data-dependent branch for it
    (explain() counts graph breaks, and a StaticCache's length is a tensor)."""
    model = tiny_model()
    cache = StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        model(ids(length=4), cache=cache, use_cache=True)
        explanation = torch._dynamo.explain(model)(ids(length=1), cache=cache, use_cache=True)
    assert explanation.graph_break_count == 0
    with pytest.raises(ValueError, match="block_size"):
        model(ids(length=65))


# ---------------------------------------------------------------------------------------------- torch.export


def test_export_forward_with_dynamic_batch_and_length_matches_eager():
    model = tiny_model()
    x, mask = left_padded(ids(length=8))
    batch, seq = Dim("batch", max=8), Dim("seq", min=2, max=model.config.block_size)
    program = torch.export.export(Logits(model), (x, mask), dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    x2, mask2 = left_padded(ids(batch=3, length=13, seed=5), pad=(0, 4, 0))
    with torch.no_grad():
        diff = program.module()(x2, mask2) - model(x2, attention_mask=mask2, use_cache=False).logits
    assert diff[mask2.bool()].abs().max().item() <= 1e-5


def test_export_prefill_and_decode_with_a_static_cache_generates_like_generate():
    """transformers' exportable wrapper (a StaticCache held as buffers): one program, prefill of any length, then one
    token at a time; its greedy tokens are generate()'s."""
    model = tiny_model()
    prompt = ids(batch=1, length=6, seed=7)
    expected = model.generate(prompt, max_new_tokens=8, do_sample=False)[0, 6:].tolist()
    model.generation_config.cache_implementation = "static"
    exportable = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=32)
    seq = Dim("seq", min=1, max=32)
    program = exportable.export(
        input_ids=prompt,
        cache_position=torch.arange(6),
        dynamic_shapes={"input_ids": {1: seq}, "cache_position": {0: seq}},
        strict=False,
    )
    step = program.module()  # one module: the cache buffers live in it
    logits = step(input_ids=prompt, cache_position=torch.arange(6))
    tokens = [logits[0, -1].argmax().item()]
    for position in range(6, 13):
        logits = step(input_ids=torch.tensor([[tokens[-1]]]), cache_position=torch.tensor([position]))
        tokens.append(logits[0, -1].argmax().item())
    assert tokens == expected


# ---------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("with_mask", [False, True])
def test_onnx_export_runs_in_onnxruntime_and_matches_torch(tmp_path, with_mask):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model()
    x, mask = left_padded(ids(length=8))
    names = ["input_ids", "attention_mask"] if with_mask else ["input_ids"]
    args = (x, mask) if with_mask else (x,)
    program = torch.onnx.export(
        Logits(model),
        args,
        dynamo=True,
        input_names=names,
        output_names=["logits"],
        dynamic_shapes={name: {0: "batch", 1: "seq"} for name in names},
    )
    program.save(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x2, mask2 = left_padded(ids(batch=3, length=13, seed=5), pad=(0, 4, 0))
    inputs = {"input_ids": x2.numpy(), "attention_mask": mask2.numpy()} if with_mask else {"input_ids": x2.numpy()}
    (logits,) = session.run(None, inputs)
    with torch.no_grad():
        expected = model(x2, attention_mask=mask2 if with_mask else None, use_cache=False).logits
    real = mask2.bool() if with_mask else torch.ones_like(x2, dtype=torch.bool)
    assert (torch.from_numpy(logits) - expected)[real][..., :50257].abs().max().item() <= 1e-4

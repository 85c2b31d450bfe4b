"""LoRA through PEFT: MiniGPT's layer names are GPT-2's, so ``target_modules=["c_attn", "c_proj", "c_fc"]`` (or
``"all-linear"``) works although PEFT has no defaults for ``model_type: minigpt``. An adapter trains, saves, and
reloads onto a saved base model in a fresh process with identical logits."""

import subprocess
import sys
import textwrap

import pytest
import torch

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM  # noqa: E402
from minigpt_hf.checkpoint import save_model_folder  # noqa: E402

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=32)
BLOCK_LINEARS = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_folder(MiniGPTForCausalLM(MiniGPTConfig(**SHAPE)), tmp_path_factory.mktemp("peft") / "base")


def batch():
    return torch.randint(0, 50257, (4, 16), generator=torch.Generator().manual_seed(5))


def lora_modules(model) -> set[str]:
    return {name.split("model.transformer.")[-1] for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_lora_trains_saves_and_reloads_in_a_fresh_process(base_folder, tmp_path, offline_env):
    base = MiniGPTForCausalLM.from_pretrained(base_folder)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"],
                        task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    assert lora_modules(model) == {f"h.{i}.{name}" for i in range(2) for name in BLOCK_LINEARS}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    x = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    merged_away = {k.replace("base_layer.", ""): v for k, v in model.base_model.model.state_dict().items()
                   if "lora_" not in k}
    assert merged_away.keys() == frozen.keys()
    assert all(torch.equal(frozen[k], merged_away[k]) for k in frozen)  # the base weights did not move

    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=x).logits
        with model.disable_adapter():  # the adapter changes the function, so a reload without it cannot pass
            assert (model(input_ids=x).logits - expected).abs().max() > 1e-3
    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        torch.set_num_threads({torch.get_num_threads()})
        base = AutoModelForCausalLM.from_pretrained({str(base_folder)!r}, trust_remote_code=True)
        model = PeftModel.from_pretrained(base, {str(adapter)!r}).eval()
        with torch.no_grad():
            torch.save(model(input_ids=torch.tensor({x.tolist()})).logits, "logits.pt")
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        """
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(offline_env, PYTHONPATH=""),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


def test_all_linear_wraps_the_blocks_but_not_the_tied_head(base_folder):
    base = MiniGPTForCausalLM.from_pretrained(base_folder).eval()
    x = batch()
    with torch.no_grad():
        before = base(input_ids=x).logits
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).eval()
    assert lora_modules(model) == {f"h.{i}.{name}" for i in range(2) for name in BLOCK_LINEARS}
    head = model.get_base_model().lm_head
    assert type(head) is torch.nn.Linear and not isinstance(head, LoraLayer)
    assert head.weight is model.get_base_model().transformer.wte.weight  # still tied
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, before)  # LoRA B starts at zero: the same function

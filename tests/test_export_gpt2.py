"""MiniGPT -> plain GPT-2: stock transformers loads the export with no custom code and gets the same logits, the
round trip through from_gpt2 is bit-exact, and what GPT-2 cannot represent is refused before anything is written."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, get_tokenizer
from minigpt_hf.conversion import export_gpt2
from minigpt_hf.checkpoint import save_model_folder

PROMPT = "Hello, I'm a language model,"
SHAPE = dict(n_layer=2, n_head=2, n_embd=64, block_size=64)  # the real vocabulary: 50304 rows, 50257 tokens


@pytest.fixture(scope="module")
def minigpt():
    torch.manual_seed(0)
    model = MiniGPTForCausalLM(MiniGPTConfig(**SHAPE)).eval()
    # the padding rows of a trained model are not zero (weight decay only shrinks their random init); keep them so
    with torch.no_grad():
        assert model.transformer.wte.weight[50257:].abs().sum() > 0
    return model


@pytest.fixture(scope="module")
def exported(minigpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    checkpoint = save_model_folder(minigpt, root / "minigpt")
    return checkpoint, export_gpt2(checkpoint, root / "gpt2")


def ids(batch=2, length=20):
    return torch.randint(0, 50257, (batch, length), generator=torch.Generator().manual_seed(1))


def test_stock_transformers_loads_the_export_without_custom_code(minigpt, exported, tmp_path, offline_env):
    _, folder = exported
    x = ids()
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}).eval()
        tok = AutoTokenizer.from_pretrained({str(folder)!r})
        prompt = tok({PROMPT!r}, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            torch.save(model(torch.tensor({x.tolist()})).logits, "logits.pt")
        greedy = model.generate(prompt, max_new_tokens=12, do_sample=False)[0].tolist()
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        print(json.dumps({{"class": type(model).__name__, "prompt": prompt[0].tolist(), "greedy": greedy}}))
        """
    )
    # run from tmp_path with the repository off sys.path: only stock transformers can define the model
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(offline_env, PYTHONPATH=""),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["class"] == "GPT2LMHeadModel"
    prompt = get_tokenizer()(PROMPT, return_tensors="pt")["input_ids"]
    assert out["prompt"] == prompt[0].tolist()
    with torch.no_grad():
        expected = minigpt(x).logits
    theirs = torch.load(tmp_path / "logits.pt")
    assert theirs.shape == (*x.shape, 50257)
    assert (theirs - expected[..., :50257]).abs().max().item() <= 1e-5
    assert out["greedy"] == minigpt.generate(prompt, max_new_tokens=12, do_sample=False)[0].tolist()


def test_export_folder_is_plain_gpt2(exported):
    _, folder = exported
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert "auto_map" not in config and not list(folder.glob("*.py"))
    assert (config["vocab_size"], config["n_positions"], config["n_ctx"]) == (50257, 64, 64)
    assert (config["activation_function"], config["tie_word_embeddings"]) == ("gelu_new", True)
    assert {"model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"].startswith("GPT2Tokenizer")


def test_round_trip_through_from_gpt2_is_bit_exact(minigpt, exported):
    _, folder = exported
    back = MiniGPTForCausalLM.from_gpt2(str(folder), vocab_size=50304).eval()
    fields = ("vocab_size", "tokenizer_vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "mlp_ratio",
              "layer_norm_epsilon", "bos_token_id", "eos_token_id", "tie_word_embeddings")
    assert {f: getattr(back.config, f) for f in fields} == {f: getattr(minigpt.config, f) for f in fields}
    ours, theirs = minigpt.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for key, tensor in ours.items():
        if key in ("transformer.wte.weight", "lm_head.weight"):  # the padding rows are dropped, then re-padded
            tensor, theirs[key] = tensor[:50257], theirs[key][:50257]
        assert torch.equal(tensor, theirs[key]), key
    with torch.no_grad():
        assert torch.equal(minigpt(ids()).logits, back(ids()).logits)  # padded ids are masked on both sides


def test_to_gpt2_returns_an_independent_gpt2_model(minigpt):
    from transformers import GPT2LMHeadModel

    gpt2 = minigpt.to_gpt2()
    assert type(gpt2) is GPT2LMHeadModel and not gpt2.training
    assert gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr()  # tied
    with torch.no_grad():
        assert (gpt2(ids()).logits - minigpt(ids()).logits[..., :50257]).abs().max().item() <= 1e-5
        gpt2.transformer.h[0].ln_1.bias.add_(1.0)  # its own copy of every tensor: the MiniGPT is untouched
    assert minigpt.transformer.h[0].ln_1.bias.abs().sum() == 0


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(bias=False), "bias=False"),
        (dict(mlp_ratio=2), "mlp_ratio=2"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
        (dict(tokenizer_vocab_size=50000), "tokenizer_vocab_size=50000"),
    ],
)
def test_what_gpt2_cannot_represent_is_refused(tmp_path, override, message):
    with torch.device("meta"):  # refused from the config alone, before any tensor is touched
        model = MiniGPTForCausalLM(MiniGPTConfig(**SHAPE, **override))
    with pytest.raises(ValueError, match=f"cannot export to GPT-2: {message}"):
        export_gpt2(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_vocabulary_smaller_than_the_tokenizer_is_refused(minigpt):
    config = MiniGPTConfig(**SHAPE)
    config.vocab_size = 50000  # a config edited after validation
    from minigpt_hf.conversion import check_gpt2_exportable

    with pytest.raises(ValueError, match="vocab_size=50000 < tokenizer_vocab_size=50257"):
        check_gpt2_exportable(config)


def test_existing_output_is_kept_without_overwrite(minigpt, exported, tmp_path):
    checkpoint, _ = exported
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match=f"{out}.*--overwrite"):
        export_gpt2(checkpoint, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old"
    export_gpt2(minigpt, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


def test_bad_inputs_are_clear(exported, tmp_path):
    _, gpt2_folder = exported
    with pytest.raises(FileNotFoundError, match="no such MiniGPT checkpoint folder"):
        export_gpt2(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a readable config"):
        export_gpt2(tmp_path / "broken", tmp_path / "out")
    with pytest.raises(ValueError, match="model_type='gpt2'.*already in GPT-2 format"):
        export_gpt2(gpt2_folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    checkpoint = save_model_folder(MiniGPTForCausalLM(MiniGPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)),
                                   tmp_path / "ckpt")
    before = sorted(p.name for p in checkpoint.iterdir())
    with pytest.raises(ValueError, match="is the checkpoint being exported"):
        export_gpt2(checkpoint, checkpoint, overwrite=True)
    assert sorted(p.name for p in checkpoint.iterdir()) == before
    with pytest.raises(ValueError, match="needs a MiniGPT model, got GPT2LMHeadModel"):
        export_gpt2(AutoModelForCausalLM.from_pretrained(gpt2_folder), tmp_path / "out")

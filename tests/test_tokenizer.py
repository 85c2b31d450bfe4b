"""The offline GPT-2 tokenizers: tiktoken and HF give GPT-2's ids, from the bundled files."""

import hashlib
import json
import random
import subprocess
import sys
import textwrap

import torch

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.checkpoint import save_model_folder
from minigpt_hf.tokenization import ASSET_DIR, EOT_ID, get_encoding, get_tokenizer, mergeable_ranks

PROMPT = "Hello, I'm a language model,"
PROMPT_IDS = [15496, 11, 314, 1101, 257, 3303, 2746, 11]


def test_bundled_files_are_openais():
    # The sha256 values tiktoken itself pins for OpenAI's encoder.json and vocab.bpe.
    assert hashlib.sha256((ASSET_DIR / "vocab.json").read_bytes()).hexdigest() == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )
    assert hashlib.sha256((ASSET_DIR / "merges.txt").read_bytes()).hexdigest() == (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )


def test_ranks_match_tiktokens_own_loader(monkeypatch):
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the files directly, cache nothing
    ranks = data_gym_to_mergeable_bpe_ranks(str(ASSET_DIR / "merges.txt"), str(ASSET_DIR / "vocab.json"))
    assert ranks == mergeable_ranks()


def test_known_ids():
    assert get_encoding().encode(PROMPT) == PROMPT_IDS
    tok = get_tokenizer()
    assert tok(PROMPT)["input_ids"] == PROMPT_IDS
    assert len(tok) == 50257 and tok.eos_token_id == EOT_ID and tok.pad_token_id == EOT_ID
    assert tok.decode(PROMPT_IDS) == PROMPT


def _random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = [
        "the", " The", "Hello", "world", "'s", "'ll", "'ve", "n't", "I'm", " don't", "123", " 4567", "3.14",
        "über", "naïve", "café", "Ελληνικά", "русский", "中文字符", "日本語", "한국어", "עברית", "العربية",
        "🙂", "🚀🚀", "👩‍👩‍👧", "\u200b", "\u00a0", "\t", "\n", "\n\n", "\r\n", "   ", "  \t ", " ", "  ",
        "<|endoftext|>", "<|endoftext", "|>", "!!", "?!", "...", "—", "–", "«", "»", "\\", "/", "{}", "[x]",
        "https://example.org/a?b=c", "def f(x):\n    return x", "ZZZ", "aaaaaaaaaaaaaaaa", "Mr.", "e.g.",
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 12)
        s = "".join(rng.choice(pieces) + (" " * rng.randint(0, 3) if rng.random() < 0.3 else "") for _ in range(k))
        if rng.random() < 0.2:
            s = "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 20)))
        out.append(s)
    return out


def test_tiktoken_and_hf_agree_on_varied_text():
    enc, tok = get_encoding(), get_tokenizer()
    strings = _random_strings(3000)
    hf_ids = tok(strings, add_special_tokens=False)["input_ids"]
    mismatches = [s for s, ids in zip(strings, hf_ids) if enc.encode(s, allowed_special="all") != ids]
    assert not mismatches, f"{len(mismatches)} strings differ, e.g. {mismatches[:3]!r}"
    assert sum(s.count("<|endoftext|>") for s in strings) > 50  # the special token was exercised
    for s, ids in zip(strings[:500], hf_ids[:500]):
        assert enc.decode(ids) == s


def test_checkpoint_tokenizer_loads_without_remote_code(tmp_path, offline_env):
    """A saved MiniGPT folder's tokenizer is GPT-2's own class (tokenizer_config.json names it), so AutoTokenizer needs
    no remote code for it; the model still does. transformers reads config.json first and, as it names custom code,
    asks about it on a terminal (15 s timeout) unless trust_remote_code is given; without a terminal (scripts, CI) or
    with trust_remote_code=False the question is skipped and the tokenizer loads."""
    torch.manual_seed(0)
    model = MiniGPTForCausalLM(MiniGPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32))
    folder = save_model_folder(model, tmp_path / "ckpt")
    script = textwrap.dedent(
        f"""
        import json, sys
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(folder)!r})
        explicit = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=False)
        try:
            AutoModelForCausalLM.from_pretrained({str(folder)!r})
            model_error = ""
        except ValueError as err:
            model_error = str(err)
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        print("RESULT", json.dumps({{
            "classes": [type(t).__name__ for t in (tok, explicit)],
            "modules": [type(t).__module__.split(".")[0] for t in (tok, explicit)],
            "ids": [t({PROMPT!r})["input_ids"] for t in (tok, explicit)],
            "padding": [tok.padding_side, tok.pad_token_id, tok.eos_token_id, tok.model_max_length],
            "model_error": model_error,
        }}))
        """
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(offline_env, PYTHONPATH=""),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.split("RESULT ")[-1])  # after the declined remote-code question, when printed
    assert all(name in ("GPT2Tokenizer", "GPT2TokenizerFast") for name in out["classes"]), out["classes"]
    assert out["modules"] == ["transformers", "transformers"]
    assert out["ids"] == [PROMPT_IDS, PROMPT_IDS]
    assert out["padding"] == ["left", EOT_ID, EOT_ID, 32]
    assert "trust_remote_code=True" in out["model_error"]

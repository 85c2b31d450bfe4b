"""Bits per byte: the byte count of target tokens, eval-loss's bpb against hand computations, and the trainer's
val/bpb (TensorBoard and log.txt)."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.commands import eval_loss as eval_loss_command
from minigpt_hf.commands import train as train_command
from minigpt_hf.evaluation import evaluate_loss
from minigpt_hf.evaluation.loss import token_byte_lengths
from minigpt_hf.tokenization import EOT_ID, get_encoding
from test_training import scalars, small_run

# ASCII, a 2-byte and a 4-byte character (GPT-2 splits the emoji over several byte tokens), and a document boundary
TEXT = "Hello, world! Caf\u00e9 au lait \U0001f642 costs 3.50.<|endoftext|>The end of the play, my lord."


def tokens_of(text=TEXT) -> np.ndarray:
    return np.array(get_encoding().encode(text, allowed_special="all"), dtype=np.uint16)


def hand_bytes(targets) -> int:
    """UTF-8 bytes of the decoded text of the targets, <|endoftext|> left out."""
    text = get_encoding().decode([int(t) for t in targets if t != EOT_ID])
    return len(text.encode("utf-8"))


def test_token_bytes_add_up_to_the_decoded_text():
    tokens = tokens_of()
    lengths = token_byte_lengths()
    assert lengths[EOT_ID] == 0 and lengths[50257:].sum() == 0  # the boundary and the padding ids are not text
    assert lengths[tokens].sum() == hand_bytes(tokens) == len(TEXT.replace("<|endoftext|>", "").encode("utf-8"))
    emoji = get_encoding().encode("\U0001f642")
    assert len(emoji) > 1 and lengths[emoji].sum() == 4  # a character split over tokens still counts 4 bytes


def test_bpb_of_a_uniform_model_by_hand():
    """Zero logits over GPT-2's 50,257 real ids (the padding ids are masked): every target costs ln 50257 nats, so
    bpb = (targets that are text) * log2(50257) / (their bytes)."""
    config = MiniGPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16)
    model = MiniGPTForCausalLM(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied with the LM head: all logits 0
    tokens, seq_len = tokens_of(), 8
    result = evaluate_loss(model, tokens, seq_len=seq_len, batch_size=2, progress=False)
    targets = tokens[1 : result["n_windows"] * seq_len + 1]
    text_targets = int((targets != EOT_ID).sum())
    assert EOT_ID in targets and text_targets == len(targets) - 1
    assert result["loss"] == pytest.approx(math.log(50257), rel=1e-6)
    assert result["n_bytes"] == hand_bytes(targets)
    assert result["bpb"] == pytest.approx(text_targets * math.log2(50257) / hand_bytes(targets), rel=1e-6)


def test_bpb_of_real_logits_by_hand():
    """A random GPT-2: float64 log-softmax of its logits, the <|endoftext|> target's nats left out."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16)).eval()
    tokens, seq_len = tokens_of(), 12
    result = evaluate_loss(model, tokens, seq_len=seq_len, batch_size=3, progress=False)
    nats, all_nats, targets = 0.0, 0.0, []
    for i in range(result["n_windows"]):
        window = torch.tensor(tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=torch.long)
        with torch.no_grad():
            logp = model(window[None, :-1]).logits[0].double().log_softmax(-1)
        for position, target in enumerate(window[1:].tolist()):
            all_nats -= logp[position, target].item()
            nats -= 0.0 if target == EOT_ID else logp[position, target].item()
            targets.append(target)
    assert result["loss"] == pytest.approx(all_nats / len(targets), rel=1e-5)
    assert result["bpb"] == pytest.approx(nats / math.log(2) / hand_bytes(targets), rel=1e-5)


def test_eval_loss_prints_bpb(tmp_path, capsys):
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16)).save_pretrained(tmp_path / "model")
    np.save(tmp_path / "tokens.npy", tokens_of())
    assert eval_loss_command.main(["--model", str(tmp_path / "model"), "--data", str(tmp_path / "tokens.npy"),
                                   "--seq_len", "12"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpb"] > 0 and result["n_bytes"] == hand_bytes(tokens_of()[1 : result["n_tokens"] + 1])


def test_trainer_logs_val_bpb_beside_val_loss(shakespeare, tmp_path):
    out = tmp_path / "run"
    assert train_command.main(small_run(shakespeare, out)) == 0
    loss, bpb = scalars(out, "val/loss"), scalars(out, "val/bpb")
    assert set(bpb) == set(loss) == {0, 2, 4}
    # GPT-2 tokens of English average ~4 bytes; the ratio of the two is that average (and ln 2)
    for step in bpb:
        assert 2.5 < loss[step] / math.log(2) / bpb[step] < 6
    log = (out / "log.txt").read_text()
    for step in (0, 2, 4):
        assert f"step {step} | val {loss[step]:.4f} | bpb {bpb[step]:.4f}" in log

"""Serving: the plain GPT-2 export of a MiniGPT checkpoint under `transformers serve` (OpenAI-compatible API), asked
through the `openai` client on a free local port, gives generate()'s greedy text."""

import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from helpers import free_port
from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.checkpoint import save_model_folder
from minigpt_hf.commands import export as export_command

PROMPT = "Hello, I'm a language model,"


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"transformers serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"transformers serve did not answer {url} within {timeout} s")


@pytest.mark.slow
def test_transformers_serve_of_the_export_gives_generates_greedy_text(tmp_path, offline_env):
    openai = pytest.importorskip("openai", reason="the dev extra installs transformers[serving] (openai, fastapi)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a tiny checkpoint with weights wide enough (std 0.5) that its greedy text varies from token to token
    torch.manual_seed(0)
    model = MiniGPTForCausalLM(MiniGPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, initializer_range=0.5))
    checkpoint = save_model_folder(model, tmp_path / "checkpoint")
    exported = tmp_path / "export"
    assert export_command.main([str(checkpoint), str(exported)]) == 0

    gpt2, tokenizer = AutoModelForCausalLM.from_pretrained(exported), AutoTokenizer.from_pretrained(exported)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    greedy = gpt2.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16)
    expected = tokenizer.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(set(greedy[0, ids.shape[1]:].tolist())) > 3, "a degenerate model: the check would be weak"

    port = free_port()
    env = dict(offline_env, HF_HUB_DISABLE_UPDATE_CHECK="1", TOKENIZERS_PARALLELISM="false")
    server = subprocess.Popen(
        [sys.executable, "-m", "transformers.cli.transformers", "serve", str(exported), "--host", "127.0.0.1",
         "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=120, max_retries=0)
        response = client.completions.create(model=str(exported), prompt=PROMPT, max_tokens=16, temperature=0)
    finally:
        server.terminate()
        try:
            log, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            log, _ = server.communicate()
    assert response.choices[0].text == expected, log[-3000:]
    assert response.usage.completion_tokens == 16 and response.usage.prompt_tokens == ids.shape[1]


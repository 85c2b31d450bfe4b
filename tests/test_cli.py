"""The command line as a daily user meets it: instant help, and one line `error: <what>; <what to do>` (exit 2) for
every bad command line of every command — argparse's own errors, unknown and abbreviated flags, bad choices,
unknown presets and model paths that do not exist."""

import json
import subprocess
import sys

import pytest

from minigpt_hf.commands import COMMANDS, main

# command -> (a mistyped flag, the flag it should suggest)
TYPOS = {
    "train": ("--max_stesp", "--max_steps"),
    "prepare-data": ("--shard_sise", "--shard_size"),
    "generate": ("--topk", "--top_k"),
    "convert": ("--vocab_sise", "--vocab_size"),
    "export": ("--overwrit", "--overwrite"),
    "eval-hellaswag": ("--limt", "--limit"),
    "eval-loss": ("--batch_sise", "--batch_size"),
    "plot": ("--otu", "--out"),
    "landscape": ("--gird", "--grid"),
    "push": ("--privat", "--private"),
    "verify": ("--hepl", "--help"),
}
# command -> an abbreviation of one of its flags, which argparse would otherwise take silently
ABBREVIATIONS = {
    "train": ["--max_step", "10"],
    "prepare-data": ["--out_dir", "x", "--shard", "5"],
    "generate": ["--num_sample", "2"],
    "convert": ["gpt2", "x", "--vocab", "50304"],
    "export": ["x", "y", "--over"],
    "eval-hellaswag": ["--model", "gpt2", "--lim", "3"],
    "eval-loss": ["--model", "gpt2", "--data", "x", "--batch", "3"],
    "plot": [".", "--ou", "x"],
    "landscape": ["gpt2", "--data", "x", "--gri", "5"],
    "push": [".", "--repo_id", "a/b", "--priv"],
    "verify": [".", "--hel"],
}
MISSING = "does/not/exist"  # three parts: a path, never a Hub id
# command -> argv naming a model (or checkpoint) folder that does not exist
MISSING_MODEL = {
    "generate": [MISSING],
    "convert": [MISSING, "out"],
    "export": [MISSING, "out"],
    "eval-hellaswag": ["--model", MISSING],
    "eval-loss": ["--model", MISSING, "--data", "x"],
    "landscape": [MISSING, "--data", "x"],
    "push": [MISSING, "--repo_id", "a/b"],
    "verify": [MISSING],
}


def one_error_line(capsys, argv) -> str:
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; " in lines[0], (argv, captured.err)
    assert captured.out == "", argv  # no usage page
    return lines[0]


def test_the_tables_cover_every_command():
    assert set(TYPOS) == set(ABBREVIATIONS) == set(COMMANDS)
    assert set(MISSING_MODEL) == set(COMMANDS) - {"train", "prepare-data", "plot"}  # those take no model


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_flag_names_the_closest_one(name, capsys):
    typo, near = TYPOS[name]
    assert one_error_line(capsys, [name, typo, "1"]) == f"error: unknown flag {typo}; did you mean {near}?"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_abbreviations_are_refused(name, capsys):
    line = one_error_line(capsys, [name, *ABBREVIATIONS[name]])
    assert line.startswith("error: unknown flag --") and "did you mean --" in line


@pytest.mark.parametrize("name", sorted(MISSING_MODEL))
def test_a_missing_model_path_says_it_does_not_exist(name, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, [name, *MISSING_MODEL[name]])
    assert f"{MISSING} does not exist" in line


def test_a_missing_folder_with_the_shape_of_a_hub_id_is_named_when_loading(capsys, monkeypatch, tmp_path):
    """``out/tiny`` could be USER/NAME on the Hub: it is looked up there, and the error still says what is wrong."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from minigpt_hf.data import ensure_embedded_shards

    ensure_embedded_shards(tmp_path / "data", progress=False)
    line = one_error_line(capsys, ["eval-loss", "--model", "out/tiny", "--data", str(tmp_path / "data")])
    assert line.startswith("error: out/tiny: no such model folder") and "HF_HUB_OFFLINE" in line
    assert "Repo id" not in line


@pytest.mark.parametrize("argv, expected", [
    (["train", "--mixed_precision", "bf61"],
     "error: --mixed_precision bf61: not a valid choice; choose one of no, fp16, bf16"),
    (["train", "--max_steps", "ten"], "error: --max_steps 'ten': not a whole number; give a whole number"),
    (["train", "--compile", "maybe"], "error: --compile: 'maybe' is not true or false; see minigpt train --help"),
    (["train", "stray"], "error: unexpected argument 'stray'; see minigpt train --help"),
    (["prepare-data"], "error: missing --out_dir; see minigpt prepare-data --help"),
    (["generate", "--dtype", "fp61"],
     "error: --dtype fp61: not a valid choice; choose one of fp32, float32, bf16, bfloat16, fp16, float16, auto"),
    (["eval-loss", "--model", "gpt2"], "error: missing --data; see minigpt eval-loss --help"),
    (["trian"], "error: unknown command 'trian'; did you mean train?"),
    (["frobnicate"], "error: unknown command 'frobnicate'; run minigpt --help for the list"),
])
def test_argparse_errors_are_one_line(argv, expected, capsys):
    assert one_error_line(capsys, argv) == expected


def test_an_unknown_preset_lists_the_presets(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["train", "--config", "tiniy"])
    assert "did you mean tiny?" in line and "colab-t4, gpt2-124m, tiny" in line
    line = one_error_line(capsys, ["train", "--preset", "tinyy"])
    assert "unknown preset 'tinyy'" in line and "gpt2-124m" in line and "tiny" in line


def test_an_unknown_key_in_a_config_file_names_the_closest_flag(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_step: 10\n")
    assert one_error_line(capsys, ["train", "--config", str(config)]) == (
        f"error: {config}: unknown key max_step; did you mean max_steps?")
    config.write_text("max_lr: fast\n")
    line = one_error_line(capsys, ["train", "--config", str(config)])
    assert line.startswith(f"error: {config}: max_lr: 'fast' is not a valid float")


def test_config_values_are_typed_like_flags(tmp_path):
    """YAML reads ``6e-4`` as a string and ``no`` as false; both arrive as the flag would give them."""
    from minigpt_hf.arguments import parse_args

    config = tmp_path / "run.yaml"
    config.write_text('max_lr: 6e-4\nmixed_precision: "no"\ncompile: yes\nmax_steps: 7\n')
    _, _, train_args = parse_args(["--config", str(config)])
    assert (train_args.max_lr, train_args.mixed_precision, train_args.compile, train_args.max_steps) == (
        6e-4, "no", True, 7)
    _, _, train_args = parse_args(["--config", str(config), "--compile", "false", "--max-steps", "9"])
    assert (train_args.compile, train_args.max_steps) == (False, 9)


PROBE = """
import json, sys
from minigpt_hf.commands import COMMANDS, main
heavy = lambda: sorted(m for m in ("torch", "transformers", "accelerate", "numpy") if m in sys.modules)
seen = {}
for argv in [["--help"], ["trian"]] + [[c, "--help"] for c in COMMANDS] + [[c, "--no_such_flag"] for c in COMMANDS]:
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    seen[" ".join(argv)] = {"code": code, "heavy": heavy()}
print(json.dumps(seen))
"""


def test_help_and_argument_errors_import_neither_torch_nor_transformers(offline_env, tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], env=offline_env, capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(seen) == 2 + 2 * len(COMMANDS)
    for argv, outcome in seen.items():
        assert outcome["heavy"] == [], f"minigpt {argv} imported {outcome['heavy']}"
        assert outcome["code"] == (2 if "no_such_flag" in argv or argv == "trian" else 0), argv


def test_import_minigpt_hf_is_light_and_registers_with_transformers_when_it_arrives(offline_env, tmp_path):
    """``import minigpt_hf`` loads no torch; the Auto classes know MiniGPT whichever of the two is imported first."""
    probe = ("import sys, minigpt_hf; light = 'torch' not in sys.modules and 'transformers' not in sys.modules; "
             "from transformers import AutoConfig; c = AutoConfig.for_model('minigpt', n_layer=2); "
             "print(light, type(c).__name__, minigpt_hf.MiniGPTForCausalLM.__name__)")
    reverse = ("import transformers, minigpt_hf; from transformers import AutoModelForCausalLM; "
               "from minigpt_hf import MiniGPTConfig; m = AutoModelForCausalLM.from_config(MiniGPTConfig("
               "n_layer=1, n_head=2, n_embd=8, block_size=8)); print(type(m).__name__)")
    direct = ("from minigpt_hf.modeling_minigpt import MiniGPTForCausalLM; from transformers import AutoConfig; "
              "print(type(AutoConfig.for_model('minigpt')).__name__)")
    outputs = [subprocess.run([sys.executable, "-c", code], env=offline_env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120).stdout.split() for code in (probe, reverse, direct)]
    assert outputs == [["True", "MiniGPTConfig", "MiniGPTForCausalLM"], ["MiniGPTForCausalLM"], ["MiniGPTConfig"]]

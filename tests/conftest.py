"""Test-wide settings: never touch the network, keep CPU threads to the machine's two cores."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the "verified once" stamps of checkpoint folders (minigpt_hf.checkpoint) go to a cache of the test session's own
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="minigpt-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def offline_env():
    """Environment for subprocesses: offline, and the repository importable."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run starts from scratch."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory):
    """The embedded corpus as shards, prepared once for the session."""
    from minigpt_hf.data import ensure_embedded_shards

    data_dir = tmp_path_factory.mktemp("shakespeare")
    ensure_embedded_shards(data_dir, progress=False)
    return data_dir

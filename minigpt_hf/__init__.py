"""minigpt_hf: GPT-2 small (124M) trained and served the Hugging Face way.

``import minigpt_hf`` registers ``MiniGPTConfig`` / ``MiniGPTModel`` / ``MiniGPTForCausalLM`` with ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM``, and marks them so ``save_pretrained`` writes the modeling code and
``auto_map`` next to the weights (a saved folder then loads with ``trust_remote_code=True`` where minigpt_hf is not
installed).

The import itself is instant: it loads neither torch nor transformers, so ``minigpt --help`` answers at once. The
names below are imported on first use, and the registration happens as soon as transformers is imported (at once,
if it already is), so ``import minigpt_hf`` followed by ``AutoModelForCausalLM.from_pretrained(folder)`` works in
either order.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys

__version__ = "0.1.0"

_EXPORTS = {
    "EOT_ID": "tokenization",
    "get_encoding": "tokenization",
    "get_tokenizer": "tokenization",
    "PRESETS": "presets",
    "MiniGPTConfig": "configuration_minigpt",
    "MiniGPTModel": "modeling_minigpt",
    "MiniGPTForCausalLM": "modeling_minigpt",
    "MiniGPTPreTrainedModel": "modeling_minigpt",
}
__all__ = sorted(_EXPORTS)

# transformers itself and the two modules that define the classes: registering waits until all have loaded
_WATCHED = ("transformers", f"{__name__}.configuration_minigpt", f"{__name__}.modeling_minigpt")
_registered = False


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def register_auto_classes() -> None:
    """Register the MiniGPT classes with transformers' Auto classes (imports torch and transformers); idempotent."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_minigpt import MiniGPTConfig
    from .modeling_minigpt import MiniGPTForCausalLM, MiniGPTModel

    AutoConfig.register(MiniGPTConfig.model_type, MiniGPTConfig, exist_ok=True)
    AutoModel.register(MiniGPTConfig, MiniGPTModel, exist_ok=True)
    AutoModelForCausalLM.register(MiniGPTConfig, MiniGPTForCausalLM, exist_ok=True)
    MiniGPTConfig.register_for_auto_class()
    MiniGPTModel.register_for_auto_class("AutoModel")
    MiniGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    _registered = True
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def _loading(name: str) -> bool:
    module = sys.modules.get(name)
    return module is None or bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_when_ready(done: str) -> None:
    """After the watched module ``done`` has loaded: register, unless another one is still loading (the one that
    imported ``done``; it calls this again when it is done)."""
    others = [name for name in _WATCHED if name != done and (name in sys.modules or name == "transformers")]
    if not any(_loading(name) for name in others):
        register_auto_classes()


class _ThenRegister:
    """A watched module's own loader, followed by :func:`_register_when_ready`."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register_when_ready(module.__spec__.name)


class _WatchImports:
    """Finds the watched modules as usual, with :class:`_ThenRegister` around their loaders."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


_FINDER = _WatchImports()
if "transformers" in sys.modules:
    register_auto_classes()
else:
    sys.meta_path.insert(0, _FINDER)

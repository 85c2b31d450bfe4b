"""minigpt_hf: GPT-2 small (124M) trained and served the Hugging Face way.

Importing the package registers ``MiniGPTConfig`` / ``MiniGPTModel`` / ``MiniGPTForCausalLM`` with ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM``, and marks them so ``save_pretrained`` writes the modeling code and
``auto_map`` next to the weights (a saved folder then loads with ``trust_remote_code=True`` where minigpt_hf is not
installed).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_minigpt import PRESETS, MiniGPTConfig
from .modeling_minigpt import MiniGPTForCausalLM, MiniGPTModel, MiniGPTPreTrainedModel
from .tokenization import EOT_ID, get_encoding, get_tokenizer

__version__ = "0.1.0"

AutoConfig.register(MiniGPTConfig.model_type, MiniGPTConfig, exist_ok=True)
AutoModel.register(MiniGPTConfig, MiniGPTModel, exist_ok=True)
AutoModelForCausalLM.register(MiniGPTConfig, MiniGPTForCausalLM, exist_ok=True)
MiniGPTConfig.register_for_auto_class()
MiniGPTModel.register_for_auto_class("AutoModel")
MiniGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "EOT_ID",
    "PRESETS",
    "MiniGPTConfig",
    "MiniGPTForCausalLM",
    "MiniGPTModel",
    "MiniGPTPreTrainedModel",
    "get_encoding",
    "get_tokenizer",
]

"""GPT-2 byte-pair encoding that works offline.

``tiktoken.get_encoding("gpt2")`` downloads OpenAI's ``vocab.bpe`` and ``encoder.json`` on first use, which fails
without network access. The same two files ship inside this package (``assets/gpt2``, MIT, see its LICENSE), and
both tokenizers here are built from them:

* :func:`get_encoding` -- a ``tiktoken.Encoding`` identical to ``tiktoken.get_encoding("gpt2")`` (fast; used for
  data preparation, as in the notes);
* :func:`get_tokenizer` -- a ``transformers`` fast tokenizer with the same ids, saved beside every checkpoint so
  ``AutoTokenizer.from_pretrained(folder)`` and ``pipeline("text-generation", model=folder)`` work offline.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

ASSET_DIR = Path(__file__).parent / "assets" / "gpt2"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
GPT2_VOCAB_SIZE = 50257
# The regex of the original GPT-2 release, in the faster form tiktoken uses for r50k_base / gpt2.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def _byte_decoder() -> dict[str, int]:
    """GPT-2 writes each byte as a printable unicode character; this maps those characters back to bytes."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + shift)] = b
            shift += 1
    return mapping


@functools.lru_cache(maxsize=1)
def mergeable_ranks() -> dict[bytes, int]:
    """GPT-2's BPE ranks (token bytes -> id) read from the bundled ``vocab.json``.

    In GPT-2 a token's id is its merge rank, so the encoder file alone defines the ranks; a test checks the result
    against tiktoken's own ``data_gym_to_mergeable_bpe_ranks`` on the bundled merges.
    """
    decoder = _byte_decoder()
    vocab = json.loads((ASSET_DIR / "vocab.json").read_text(encoding="utf-8"))
    return {bytes(decoder[ch] for ch in token): idx for token, idx in vocab.items() if token != EOT_TOKEN}


@functools.lru_cache(maxsize=1)
def get_encoding():
    """The GPT-2 ``tiktoken.Encoding``, built from the bundled files (no download)."""
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=mergeable_ranks(),
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


def get_tokenizer(model_max_length: int = 1024):
    """A ``GPT2TokenizerFast`` with the same ids as :func:`get_encoding`, built from the bundled files.

    ``<|endoftext|>`` is the bos, eos, unk and pad token (GPT-2 has no separate pad token), and padding is on the
    left so batched generation works out of the box.
    """
    from transformers import GPT2TokenizerFast

    # from_pretrained on the folder, not GPT2TokenizerFast(vocab_file=..., merges_file=...): the latter silently
    # builds a one-token tokenizer in transformers 5.x.
    tok = GPT2TokenizerFast.from_pretrained(
        str(ASSET_DIR),
        model_max_length=model_max_length,
        pad_token=EOT_TOKEN,
        padding_side="left",
    )
    for load_only in ("is_local", "local_files_only"):  # loading artefacts, not settings to save with checkpoints
        tok.init_kwargs.pop(load_only, None)
    if len(tok) != GPT2_VOCAB_SIZE:
        raise RuntimeError(f"bundled GPT-2 tokenizer in {ASSET_DIR} has {len(tok)} tokens, expected 50257; reinstall")
    return tok

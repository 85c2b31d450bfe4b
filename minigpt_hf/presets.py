"""The named model shapes, in a module of their own that imports nothing, so that the command line can list and
check them without loading torch or transformers. (It is copied beside saved weights with the config.)"""

# Named shapes. "gpt2-124m" is the notes' model; the gpt2-* shapes match OpenAI's releases (vocab 50257) so
# converted weights fit; "tiny" trains on two CPU cores in minutes.
PRESETS: dict[str, dict] = {
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, vocab_size=50257),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=50304),
}

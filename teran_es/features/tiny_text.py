"""A tiny, randomly initialised BERT text backbone for tests and synthetic runs.

No download: the WordPiece vocabulary is written from a word list (special tokens
first), the weights are random, and the result loads with
``AutoTokenizer.from_pretrained(dir)`` / ``AutoModel.from_pretrained(dir)`` like any
local Hugging Face model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PUNCTUATION = (".", ",")


def make_tiny_text_backbone(
    out_dir: str | os.PathLike[str],
    vocab_words: Iterable[str],
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate_size: int = 64,
    max_positions: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny BERT (config, random weights, tokenizer) into ``out_dir``; return it.

    ``vocab_words`` are lower-cased whole words; each becomes one WordPiece token, so a
    sentence made of them tokenises into exactly one piece per word.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = [w.lower() for w in vocab_words if w and w not in SPECIAL_TOKENS]
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *PUNCTUATION, *words]))
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # reading vocab.txt back is the one way that builds the tokenizer on transformers 4 and 5
    tokenizer = BertTokenizer.from_pretrained(str(out), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out

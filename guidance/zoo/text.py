"""Caption tokenisation: open_clip's BPE, mapped onto the compact vocabulary a zoo model was trained on.

The zoo's text towers embed only the BPE ids seen in training (about 1,900 for emoji names) rather
than all 49,408, which keeps the committed weights small; unseen ids map to an UNK embedding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

PAD, UNK = 0, 1
CONTEXT_LENGTH = 16
BPE_VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def _bpe():
    return SimpleTokenizer()


def bpe_tokenize(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> Tensor:
    """open_clip BPE ids [B, L], SOT ... EOT, zero-padded and truncated (EOT kept)."""
    return _bpe()(list(texts), context_length=context_length)


def build_vocab(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> Tensor:
    """Sorted BPE ids that occur in `texts` (excluding padding): row i+2 of a compact embedding."""
    ids = torch.unique(bpe_tokenize(texts, context_length))
    return ids[ids != 0]


class CaptionTokenizer:
    """Texts -> (compact token ids [B, L], EOT positions [B]) for a given compact vocabulary."""

    def __init__(self, vocab: Tensor, context_length: int = CONTEXT_LENGTH) -> None:
        self.vocab = vocab.long()
        self.context_length = context_length
        self.table = torch.full((BPE_VOCAB_SIZE,), UNK, dtype=torch.long)
        self.table[0] = PAD
        self.table[self.vocab] = torch.arange(len(self.vocab)) + 2

    @property
    def size(self) -> int:
        return len(self.vocab) + 2

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Compact ids with the EOT position packed as the last column: [B, L + 1]."""
        bpe = bpe_tokenize(texts, self.context_length)
        eot = bpe.argmax(dim=-1)  # EOT has the largest BPE id, as open_clip assumes
        return torch.cat([self.table[bpe], eot[:, None]], dim=1)


def split_tokens(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Undo the packing of `CaptionTokenizer.__call__`: (ids [B, L], eot [B])."""
    return tokens[:, :-1], tokens[:, -1]

"""A word-level tokenizer that needs no download.

Words the package's tasks use get fixed ids; any other word (a user's task, a real
VQA question) is hashed (CRC-32, stable across runs and machines) into a reserved
bucket range, so the embedding table of a pretrained backbone never changes size.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

PAD, CLS, UNK = 0, 1, 2
_SPECIAL = ("[PAD]", "[CLS]", "[UNK]")
N_SPECIAL = len(_SPECIAL)
_WORD = re.compile(r"[a-z0-9]+")

# Every word of the built-in task templates (data/synthetic.py, data/digits.py).
BUILTIN_WORDS = (
    "what",
    "color",
    "colour",
    "is",
    "the",
    "of",
    "shape",
    "object",
    "how",
    "many",
    "are",
    "there",
    "a",
    "an",
    "style",
    "background",
    "digit",
    "this",
    "even",
    "odd",
    "larger",
    "than",
    "four",
    "which",
    "signal",
    "sensor",
    "pattern",
    "showing",
    "in",
    "image",
    "scene",
    "any",
    "number",
    "does",
    "show",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "cyan",
    "orange",
    "white",
    "gray",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
    "stripes",
    "checker",
    "dots",
    "gradient",
    "noise",
    "plain",
)


class WordTokenizer:
    """Lower-cases, splits on non-alphanumerics, maps words to ids, pads to ``max_length``.

    Sequences start with ``[CLS]``; ids ``3 … 3+len(words)-1`` are the known words;
    ``[vocab_size - hash_buckets, vocab_size)`` take hashed unknown words.
    """

    def __init__(
        self,
        max_length: int = 12,
        vocab_size: int = 256,
        hash_buckets: int = 64,
        words: tuple[str, ...] = BUILTIN_WORDS,
    ):
        known = len(_SPECIAL) + len(words)
        if vocab_size < known + hash_buckets:
            raise ValueError(
                f"vocab_size must be >= {known + hash_buckets} (specials + {len(words)} words + "
                f"{hash_buckets} hash buckets), got {vocab_size}"
            )
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.hash_buckets = hash_buckets
        self.word_to_id = {w: len(_SPECIAL) + i for i, w in enumerate(words)}

    def word_id(self, word: str) -> int:
        if word in self.word_to_id:
            return self.word_to_id[word]
        return self.vocab_size - self.hash_buckets + zlib.crc32(word.encode()) % self.hash_buckets

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``[N, max_length]`` (int64) and the attention mask (1 = real token)."""
        ids = np.full((len(texts), self.max_length), PAD, dtype=np.int64)
        for i, text in enumerate(texts):
            toks = [CLS] + [self.word_id(w) for w in _WORD.findall(text.lower())]
            toks = toks[: self.max_length]
            ids[i, : len(toks)] = toks
        return ids, (ids != PAD).astype(np.int64)

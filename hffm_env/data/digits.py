"""A real-data task: scikit-learn's handwritten digits (shipped with scikit-learn, so
no download) as coloured images with questions about them."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hffm_env.data.registry import TaskData, register_task
from hffm_env.data.synthetic import COLORS

DIGIT_ANSWERS = tuple(str(d) for d in range(10)) + ("yes", "no")
_QUESTIONS = ("what digit is this?", "is the digit even?", "is the digit larger than four?")


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images, target = d.images.astype(np.float64) / 16.0, d.target.astype(np.int64)
    for arr in (images, target):  # cached and shared by every pool: read-only
        arr.flags.writeable = False
    return images, target


@register_task(
    "digits_qa",
    modalities=("image", "text"),
    answers=DIGIT_ANSWERS,
    description="questions about scikit-learn's 8x8 handwritten digits (real data)",
)
def build_digits_qa(n: int, rng: np.random.Generator, config) -> TaskData:
    images, target = _digits()
    pick = rng.permutation(len(target))[:n] if n <= len(target) else rng.integers(len(target), size=n)
    size = config.image_size
    # nearest-neighbour upsampling of the 8x8 grid to size x size
    grid = np.minimum((np.arange(size) * 8) // size, 7)
    gray = images[pick][:, grid][:, :, grid]
    palette = np.array(list(COLORS.values()), dtype=float)
    fg = palette[rng.integers(len(palette), size=n)]
    img = (20.0 + gray[..., None] * (fg[:, None, None, :] - 20.0)).astype(np.uint8)
    q = rng.integers(len(_QUESTIONS), size=n)
    digit = target[pick]
    answer = np.where(q == 0, digit, np.where(q == 1, np.where(digit % 2 == 0, 10, 11), np.where(digit > 4, 10, 11)))
    tokens, attention = config.tokenizer().encode([_QUESTIONS[i] for i in q])
    return TaskData("digits_qa", DIGIT_ANSWERS, answer.astype(np.int64), image=img, tokens=tokens, attention=attention)

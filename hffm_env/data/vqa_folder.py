"""VQA folders in the reference layout, for users who hold ArtVQA, GQA or similar locally.

A folder holds ``ann.json`` — a list of records with ``"question"``, ``"answer"`` and
``"image"`` (or ``"image_id"``), an image file name — the images, and optionally
``label2id.json`` mapping answers to class ids. The images are looked up in
``images/``, else in ``train/`` (where the paper's reference dataset generators
write them, next to ``ann.json``), else in the folder itself. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hffm_env._validation import ConfigError
from hffm_env.data.registry import TaskData, register_task

IMAGE_DIRS = ("images", "train")  # where a folder's images are looked for, in order (then the folder itself)


def _image_dir(root: Path, image_dir: str | None) -> Path:
    if image_dir is not None:
        return root / image_dir
    return next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root)


def load_vqa_folder(
    root: str | Path, config, *, name: str | None = None, image_dir: str | None = None, unknown_answers: str = "error"
) -> TaskData:
    """All records of a VQA folder as one :class:`TaskData`, images resized to ``config.image_size``.

    An answer missing from ``label2id.json`` raises, naming the record, unless
    ``unknown_answers="skip"``, which leaves such records out. A record that is not
    an object with the fields above, or whose image is missing or cannot be read as
    an image (a truncated or foreign file), raises naming the record.
    """
    from PIL import Image

    root = Path(root)
    if unknown_answers not in ("error", "skip"):
        raise ConfigError(f"unknown_answers must be 'error' or 'skip', got {unknown_answers!r}")
    ann = root / "ann.json"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} not found: a VQA folder needs ann.json (see hffm_env.data.vqa_folder)")
    records = json.loads(ann.read_text())
    if not isinstance(records, list) or not records:
        raise ValueError(f"{ann} must hold a non-empty JSON list of records")
    label_file = root / "label2id.json"
    if label_file.is_file():
        label2id = {str(k): int(v) for k, v in json.loads(label_file.read_text()).items()}
        answers = tuple(a for a, _ in sorted(label2id.items(), key=lambda kv: kv[1]))
        if sorted(label2id.values()) != list(range(len(answers))):
            raise ValueError(f"{label_file} ids must be 0..{len(answers) - 1}")
    else:
        answers = tuple(sorted({str(r.get("answer", "")).strip().lower() for r in records}))
        label2id = {a: i for i, a in enumerate(answers)}
    images, questions, labels = [], [], []
    folder = _image_dir(root, image_dir)
    size = config.image_size
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{ann} record {i} must be an object with question, answer and image, got {rec!r:.80}")
        missing = [k for k in ("question", "answer") if k not in rec]
        if missing or ("image" not in rec and "image_id" not in rec):
            raise ValueError(f"{ann} record {i} lacks {missing or ['image']}")
        answer = str(rec["answer"]).strip().lower() if not label_file.is_file() else str(rec["answer"])
        if answer not in label2id:
            if unknown_answers == "skip":
                continue
            raise ValueError(
                f"{ann} record {i}: answer {answer!r} is not in the answer vocabulary "
                f"({len(answers)} answers); pass unknown_answers='skip' to leave such records out"
            )
        path = folder / str(rec.get("image", rec.get("image_id")))
        if not path.is_file():
            raise FileNotFoundError(f"{ann} record {i}: image {path} not found")
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8))
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # unreadable, truncated, empty
            raise ValueError(f"{ann} record {i}: image {path} cannot be read as an image ({e})") from e
        questions.append(str(rec["question"]))
        labels.append(label2id[answer])
    if not labels:
        raise ValueError(f"{ann}: no record has an answer in the vocabulary")
    tokens, attention = config.tokenizer().encode(questions)
    return TaskData(
        name or root.name,
        answers,
        np.array(labels, dtype=np.int64),
        image=np.stack(images),
        tokens=tokens,
        attention=attention,
    )


def register_vqa_folder(name: str, root: str | Path, answers: tuple[str, ...], **kwargs) -> None:
    """Register a local VQA folder as task ``name``: a pool of ``n`` draws from its records."""

    @register_task(name, modalities=("image", "text"), answers=tuple(answers), description=f"VQA folder {root}")
    def build(n: int, rng: np.random.Generator, config) -> TaskData:
        data = load_vqa_folder(root, config, name=name, **kwargs)
        if data.answers != tuple(answers):
            raise ValueError(f"VQA folder {root} has answers {data.answers[:5]}..., registered {answers[:5]}...")
        idx = rng.permutation(len(data))[:n] if n <= len(data) else rng.integers(len(data), size=n)
        return data.subset(idx)

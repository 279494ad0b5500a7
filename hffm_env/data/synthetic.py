"""The synthetic M3T task suite: scenes of coloured shapes on styled backgrounds,
short questions about them, and a 1-D sensor signal.

* ``scene_qa`` (GQA-like, compositional): colour of a shape, shape of a colour,
  counting, existence of a colour-shape pair.
* ``style_qa`` (Art-like): the style and the colour of the background texture.
* ``sensor``: which waveform a noisy 1-D signal shows.

Everything is drawn from the generator passed in; images are rendered with numpy
over the whole batch at once.
"""

from __future__ import annotations

import numpy as np

from hffm_env.data.registry import TaskData, register_task

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 205, 215),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
COLOR_NAMES = tuple(COLORS)
SHAPES = ("circle", "square", "triangle")
STYLES = ("stripes", "checker", "dots", "gradient", "noise", "plain")
COUNTS = ("0", "1", "2", "3")
WAVEFORMS = ("sine", "square", "sawtooth", "chirp", "bursts", "steps")
MAX_SHAPES = 3

SCENE_ANSWERS = COLOR_NAMES + SHAPES + COUNTS + ("yes", "no")
STYLE_ANSWERS = STYLES + COLOR_NAMES


def _background(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Styled background textures: (images float [n,H,W,3] in 0..255, style ids, colour ids)."""
    style = rng.integers(len(STYLES), size=n)
    color = rng.integers(len(COLOR_NAMES), size=n)
    y, x = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi, size=(n, 1, 1))
    freq = rng.uniform(3.0, 6.0, size=(n, 1, 1))
    proj = x[None] * np.cos(theta) + y[None] * np.sin(theta)
    pattern = np.empty((n, size, size))
    patterns = {
        0: lambda s: (np.sin(2 * np.pi * freq[s] * proj[s]) > 0).astype(float),
        1: lambda s: (np.floor(x[None] * freq[s]) + np.floor(y[None] * freq[s])) % 2,
        2: lambda s: (np.hypot((x[None] * freq[s]) % 1 - 0.5, (y[None] * freq[s]) % 1 - 0.5) < 0.25).astype(float),
        3: lambda s: (proj[s] - proj[s].min(axis=(1, 2), keepdims=True)) / np.ptp(proj[s], axis=(1, 2), keepdims=True),
        4: lambda s: rng.uniform(size=(int(s.sum()), size, size)),
        5: lambda s: np.full((int(s.sum()), size, size), 0.5),
    }
    for k, fn in patterns.items():
        sel = style == k
        if sel.any():
            pattern[sel] = fn(sel)
    rgb = np.array([COLORS[c] for c in COLOR_NAMES], dtype=float)[color]  # [n, 3]
    img = rgb[:, None, None, :] * (0.25 + 0.35 * pattern[..., None])  # darker than the shapes
    return img, style, color


def render_scenes(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    """Scenes with 1-3 shapes, each in its own quadrant: images and their ground truth."""
    img, style, bg_color = _background(rng, n, size)
    n_shapes = rng.integers(1, MAX_SHAPES + 1, size=n)
    present = np.arange(MAX_SHAPES)[None] < n_shapes[:, None]
    kind = rng.integers(len(SHAPES), size=(n, MAX_SHAPES))
    color = rng.integers(len(COLOR_NAMES), size=(n, MAX_SHAPES))
    quadrant = np.argsort(rng.uniform(size=(n, 4)), axis=1)[:, :MAX_SHAPES]
    cx = 0.25 + 0.5 * (quadrant % 2) + rng.uniform(-0.05, 0.05, size=(n, MAX_SHAPES))
    cy = 0.25 + 0.5 * (quadrant // 2) + rng.uniform(-0.05, 0.05, size=(n, MAX_SHAPES))
    half = rng.uniform(0.12, 0.19, size=(n, MAX_SHAPES))
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    palette = np.array([COLORS[c] for c in COLOR_NAMES], dtype=float)
    for k in range(MAX_SHAPES):
        dx = x[None] - cx[:, k, None, None]
        dy = y[None] - cy[:, k, None, None]
        h = half[:, k, None, None]
        masks = np.stack(
            [
                dx**2 + dy**2 < h**2,  # circle
                (np.abs(dx) < 0.85 * h) & (np.abs(dy) < 0.85 * h),  # square
                (dy < h) & (np.abs(dx) < (dy + h) / 2),
            ]
        )  # triangle, apex up
        mask = masks[kind[:, k], np.arange(n)] & present[:, k, None, None]
        img[mask] = palette[color[:, k]][np.nonzero(mask)[0]]
    return {
        "image": np.clip(img, 0, 255).astype(np.uint8),
        "style": style,
        "bg_color": bg_color,
        "present": present,
        "kind": kind,
        "color": color,
        "center": np.stack([cx, cy], axis=-1),
    }


def _scene_question(rng: np.random.Generator, present, kind, color) -> tuple[str, str]:
    kinds = [SHAPES[k] for k, p in zip(kind, present) if p]
    colors = [COLOR_NAMES[c] for c, p in zip(color, present) if p]
    pairs = set(zip(colors, kinds))
    unique_kinds = [k for k in kinds if kinds.count(k) == 1]
    unique_colors = [c for c in colors if colors.count(c) == 1]
    template = rng.integers(4)
    if template == 0 and unique_kinds:
        shape = unique_kinds[rng.integers(len(unique_kinds))]
        return f"what color is the {shape}?", colors[kinds.index(shape)]
    if template == 1 and unique_colors:
        c = unique_colors[rng.integers(len(unique_colors))]
        return f"what shape is the {c} object?", kinds[colors.index(c)]
    if template == 3:
        if rng.uniform() < 0.5:
            c, s = sorted(pairs)[rng.integers(len(pairs))]
            return f"is there a {c} {s}?", "yes"
        absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in pairs]
        c, s = absent[rng.integers(len(absent))]
        return f"is there a {c} {s}?", "no"
    shape = SHAPES[rng.integers(len(SHAPES))]
    return f"how many {shape}s are there?", str(kinds.count(shape))


@register_task(
    "scene_qa",
    modalities=("image", "text"),
    answers=SCENE_ANSWERS,
    description="compositional questions about coloured shapes (GQA-like)",
)
def build_scene_qa(n: int, rng: np.random.Generator, config) -> TaskData:
    scene = render_scenes(rng, n, config.image_size)
    qa = [_scene_question(rng, scene["present"][i], scene["kind"][i], scene["color"][i]) for i in range(n)]
    tokens, attention = config.tokenizer().encode([q for q, _ in qa])
    index = {a: i for i, a in enumerate(SCENE_ANSWERS)}
    label = np.array([index[a] for _, a in qa], dtype=np.int64)
    return TaskData("scene_qa", SCENE_ANSWERS, label, image=scene["image"], tokens=tokens, attention=attention)


@register_task(
    "style_qa",
    modalities=("image", "text"),
    answers=STYLE_ANSWERS,
    description="the style and colour of the background texture (Art-like)",
)
def build_style_qa(n: int, rng: np.random.Generator, config) -> TaskData:
    scene = render_scenes(rng, n, config.image_size)
    ask_style = rng.uniform(size=n) < 0.5
    questions = np.where(ask_style, "what is the style of the background?", "what color is the background?")
    label = np.where(ask_style, scene["style"], len(STYLES) + scene["bg_color"]).astype(np.int64)
    tokens, attention = config.tokenizer().encode(list(questions))
    return TaskData("style_qa", STYLE_ANSWERS, label, image=scene["image"], tokens=tokens, attention=attention)


def sensor_signals(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy waveforms (float32 ``[n, length]``) and their class ids."""
    label = rng.integers(len(WAVEFORMS), size=n)
    t = np.linspace(0.0, 1.0, length, endpoint=False)[None]
    f = rng.uniform(2.0, 6.0, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amp = rng.uniform(0.6, 1.4, size=(n, 1))
    arg = 2 * np.pi * f * t + phase
    waves = {
        0: np.sin(arg),
        1: np.sign(np.sin(arg)),
        2: 2 * ((arg / (2 * np.pi)) % 1.0) - 1,
        3: np.sin(2 * np.pi * (f * t + 3.0 * f * t**2) + phase),
        4: np.sin(2 * np.pi * 2 * f * t + phase) * (np.sin(np.pi * f * t + phase) > 0.3),
        5: rng.uniform(-1, 1, size=(n, 8))[:, np.minimum((t[0] * 8).astype(int), 7)],
    }
    signal = np.zeros((n, length))
    for k, w in waves.items():
        sel = label == k
        signal[sel] = w[sel]
    signal = amp * signal + rng.normal(0.0, 0.35, size=(n, length))
    return signal.astype(np.float32), label.astype(np.int64)


@register_task(
    "sensor", modalities=("sensor",), answers=WAVEFORMS, description="which waveform a noisy 1-D sensor signal shows"
)
def build_sensor(n: int, rng: np.random.Generator, config) -> TaskData:
    signal, label = sensor_signals(rng, n, config.sensor_length)
    return TaskData("sensor", WAVEFORMS, label, sensor=signal)

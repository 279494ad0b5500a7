"""Drawing of the fog network for ``render()``: tiers, clusters, D2D links, this round's traffic."""

from __future__ import annotations

import numpy as np

from hffm_env.model.banks import HEAD_PREFIX

KIND_COLOURS = {
    "adapters": "tab:red",
    "prompts": "tab:pink",
    "experts": "tab:purple",
    "gate": "tab:purple",
    "image_encoder": "tab:olive",
    "text_encoder": "tab:olive",
    "sensor_encoder": "tab:olive",
    "heads": "tab:orange",
    "inference": "tab:blue",
}


def _colour(module: str) -> str:
    if module.startswith(HEAD_PREFIX):
        return KIND_COLOURS["heads"]
    return KIND_COLOURS.get(module, "black")


def draw(core, figure=None, human: bool = False):
    """Draw the network of ``core``'s federation; returns ``(rgb array [H, W, 3] uint8, figure)``."""
    import matplotlib

    if not human:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fed = core.fed
    topo = fed.topology
    if figure is None:
        figure = plt.figure(figsize=(6, 6), dpi=80)
        FigureCanvasAgg(figure) if not human else None
    figure.clf()
    ax = figure.add_subplot(1, 1, 1)
    pos = topo.positions.copy()
    side = fed.scenario.network.area_side_m
    pos[topo.top] = (side / 2, side * 1.08)  # the cloud sits above the area
    d = topo.n_devices
    for u, v in topo.d2d.edges:
        ax.plot(*pos[[u, v]].T, color="0.8", lw=0.6, zorder=1)
    edges = topo.tier_ids(1)
    for dev in range(d):
        ax.plot(*pos[[dev, topo.parent[dev]]].T, color="0.92", lw=0.4, zorder=0)
    cmap = plt.get_cmap("tab10")
    ax.scatter(
        *pos[:d].T,
        s=18,
        c=[cmap(c % 10) for c in topo.cluster],
        zorder=3,
        edgecolors=["k" if a else "none" for a in fed.members.active],
    )
    heads = topo.heads[topo.heads >= 0]
    ax.scatter(*pos[heads].T, s=60, facecolors="none", edgecolors="k", zorder=4)
    ax.scatter(*pos[edges].T, s=70, marker="s", c="0.3", zorder=3)
    ax.scatter(*pos[[topo.top]].T, s=160, marker="*", c="0.1", zorder=3)
    if fed.round_index >= 0 and fed.ledger.summaries:
        rows = fed.ledger.records(max(fed.ledger.summaries))
        moving = rows["src"] != rows["dst"]
        for s, t, m in zip(rows["src"][moving], rows["dst"][moving], rows["module"][moving]):
            ax.annotate(
                "",
                xy=pos[t],
                xytext=pos[s],
                zorder=2,
                arrowprops=dict(arrowstyle="-|>", color=_colour(m), lw=1.2, alpha=0.6),
            )
    ax.set_title(f"round {fed.round_index + 1}  score {core.mean_score:.2f}  energy {core.energy_spent:.3g} J")
    ax.set_xlim(-0.05 * side, 1.05 * side)
    ax.set_ylim(-0.05 * side, 1.15 * side)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    if human:
        plt.pause(0.001)
    return image, figure


class CoreRenderer:
    """The figure an env draws into, shared by the Gymnasium and PettingZoo fronts."""

    def __init__(self) -> None:
        self.figure = None

    def render(self, core, mode: str):
        """An rgb array (``mode="rgb_array"``) or None after showing the figure (``"human"``)."""
        if core.fed is None:
            raise RuntimeError("render() called before reset()")
        image, self.figure = draw(core, self.figure, human=mode == "human")
        return image if mode == "rgb_array" else None

    def close(self) -> None:
        if self.figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self.figure)
            self.figure = None

"""The zoo map: a 2-D projection of a family's sketches, coloured by dataset, task or kind."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.domain import MAP_METHODS, check_choice
from zoo.errors import ZooValueError


def project(x: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """2-D coordinates of the rows of ``x`` and the share of variance each axis explains (PCA).

    ``tsne`` needs scikit-learn; PCA is exact and always available.
    """
    check_choice(method, MAP_METHODS, "--method")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise ZooValueError(f"a map needs at least 2 models, got {len(x)}")
    centred = x - x.mean(axis=0)
    # The eigenvectors of the smaller of X^T X and X X^T: the same axes as an SVD of X, and
    # at 100k x 1024 sketches 2 s instead of 33 (the SVD built all 100k left vectors).
    n, d = centred.shape
    gram = centred.T @ centred if n > d else centred @ centred.T
    vals, vecs = np.linalg.eigh(gram)
    vals, vecs = np.clip(vals[::-1], 0.0, None), vecs[:, ::-1]
    total = float(vals.sum()) or 1.0
    k = min(2, len(vals))
    coords = np.zeros((n, 2))
    if n > d:
        coords[:, :k] = centred @ vecs[:, :k]
    else:
        coords[:, :k] = vecs[:, :k] * np.sqrt(vals[:k])
    # An axis's sign is arbitrary: fix it so that its largest coordinate is positive (stable maps).
    for j in range(k):
        if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
            coords[:, j] = -coords[:, j]
    explained = [float(v) for v in (vals[:2] / total)] + [0.0] * (2 - k)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as e:
            raise ZooValueError("--method tsne needs scikit-learn (pip install scikit-learn); use --method pca") from e
        perplexity = max(2.0, min(30.0, (len(x) - 1) / 3))
        coords = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(centred)
        explained = []
    return coords, explained


def draw(coords: np.ndarray, names: Sequence[str], groups: Sequence[str | None], color_by: str, title: str,
         out: Path, annotate: bool = True) -> Path:
    """Scatter plot, one colour per group, written atomically as PNG (or any matplotlib format)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    labels = ["(none)" if g is None else str(g) for g in groups]
    uniq = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(uniq) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=120)
    for i, lab in enumerate(uniq):
        idx = [j for j, l in enumerate(labels) if l == lab]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=36, color=cmap(i % cmap.N), label=lab, alpha=0.85,
                   edgecolors="black", linewidths=0.4)
    if annotate and len(names) <= 60:
        for (px, py), n in zip(coords, names):
            ax.annotate(n, (px, py), fontsize=6, xytext=(3, 3), textcoords="offset points", alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.legend(title=color_by, fontsize=7, title_fontsize=8, loc="best", markerscale=0.8)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out

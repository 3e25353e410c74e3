"""Class colours and the territory image (class colour, confidence as lightness)."""

from __future__ import annotations

import colorsys

import numpy as np

# Tableau-10 then its light variants: distinct on white and on the pale territories.
_BASE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip

# Territory tint: a cell is mixed from white towards its class colour by
# TINT_MIN + TINT_SPAN * confidence, so confident regions are clearly coloured
# and uncertain ones fade to white, while dots drawn on top stay readable.
TINT_MIN = 0.08
TINT_SPAN = 0.47


def class_palette(n_classes: int) -> list[str]:
    """``n_classes`` distinct hex colours (Tableau-20, then evenly spaced hues)."""
    if n_classes <= len(_BASE):
        return _BASE[:n_classes]
    hues = np.linspace(0.0, 1.0, n_classes, endpoint=False)
    colours = []
    for k, h in enumerate(hues):
        lightness = 0.45 if k % 2 == 0 else 0.6
        r, g, b = colorsys.hls_to_rgb(float(h), lightness, 0.75)
        colours.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return colours


def hex_to_rgb(colours: list[str]) -> np.ndarray:
    """``(K, 3)`` float array of 0..255 RGB values."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.float64)


def territory_lut(colours: list[str]) -> np.ndarray:
    """``(K, 256)`` uint32 RGBA look-up table indexed by ``[class, confidence byte]``."""
    rgb = hex_to_rgb(colours)[:, None, :]
    tint = (TINT_MIN + TINT_SPAN * np.arange(256) / 255.0)[None, :, None]
    mixed = np.rint(255.0 * (1.0 - tint) + rgb * tint).astype(np.uint32)
    alpha = np.uint32(255) << np.uint32(24)
    return mixed[..., 0] | (mixed[..., 1] << 8) | (mixed[..., 2] << 16) | alpha


def territory_image(classes: np.ndarray, confidence: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """RGBA image ``(G, G)`` uint32 of a territory grid (row 0 at the bottom, as Bokeh draws it).

    Classes outside the palette (a corrupt grid) are drawn white rather than failing.
    """
    classes = np.asarray(classes)
    safe = np.where(classes < lut.shape[0], classes, 0)
    image = lut[safe, np.asarray(confidence)]
    image[classes >= lut.shape[0]] = np.uint32(0xFFFFFFFF)
    return np.ascontiguousarray(image, dtype=np.uint32)

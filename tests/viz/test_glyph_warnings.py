"""Figures of files named in scripts the font lacks (CJK) draw boxes for those characters, quietly."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")


def test_png_bytes_with_glyphs_the_font_lacks_warns_nothing():
    import matplotlib.pyplot as plt

    from featuremaps.viz.draw import png_bytes

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.set_title("猫の写真.jpg")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = png_bytes(fig, dpi=50)
    plt.close(fig)
    assert data.startswith(b"\x89PNG")
    assert not [w for w in seen if "Glyph" in str(w.message)], [str(w.message) for w in seen]

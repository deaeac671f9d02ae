"""Chinese in figures: the font nbutils installs draws class names, with no missing glyphs."""

from __future__ import annotations

import io
import warnings

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from nbutils.reporting import (
    fonts,  # noqa: E402
    plots,
)

CNEWS_CLASSES = ["体育", "财经", "房产", "家居", "教育", "科技", "时尚", "时政", "游戏", "娱乐"]


def test_the_bundled_font_is_installed_and_registered():
    path = fonts.bundled_font_file()
    assert path is not None, "noto-cjk-sans-otc is a dependency of nbutils: pip install -e ."
    assert fonts.register_bundled_cjk_font() == fonts.BUNDLED_FAMILY
    assert plots.cjk_font() is not None
    # the class names keep their Chinese form instead of the "class N" fallback
    assert plots.plot_labels(CNEWS_CLASSES) == CNEWS_CLASSES


def test_chinese_labels_render_with_real_glyphs():
    name = plots.use_cjk_font()
    assert name is not None
    # every character of the labels is in the font matplotlib picks for them
    chosen = font_manager.findfont(font_manager.FontProperties(family=[name]), fallback_to_default=False)
    face = FT2Font(chosen)
    assert all(face.get_char_index(ord(ch)) for ch in "".join(CNEWS_CLASSES) + "混淆矩阵")

    matrix = pd.DataFrame([[5, 1], [2, 7]], index=CNEWS_CLASSES[:2], columns=CNEWS_CLASSES[:2])
    with warnings.catch_warnings(record=True) as caught:
        # plots.use_cjk_font may have silenced glyph warnings earlier in this process; undo that
        warnings.simplefilter("always")
        fig = plots.confusion_heatmap(matrix)
        fig.axes[0].set_title("混淆矩阵")
        fig.savefig(io.BytesIO(), format="png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert set(CNEWS_CLASSES[:2]) <= set(labels)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")

"""A font that draws Chinese in every figure, on any machine that installed nbutils.

matplotlib ships no CJK glyphs, and a fresh laptop or CI image often has no CJK system font,
so class names such as 体育 / 财经 would render as empty boxes. nbutils depends on the PyPI
package ``noto-cjk-sans-otc`` (Google's Noto Sans CJK Regular, SIL Open Font License 1.1); this
module adds its font file to matplotlib's font manager so ``plots.use_cjk_font`` finds it the
same way it finds a system font. Registering is cheap (no rebuild of matplotlib's font cache)
and happens once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

# The family in the collection with the Simplified Chinese glyph forms (THUCNews is Simplified).
BUNDLED_FAMILY = "Noto Sans CJK SC"


def bundled_font_file() -> Path | None:
    """The Noto Sans CJK collection installed with nbutils, or None if the package is missing."""
    try:
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    path = Path(str(FONT_PATH))
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def register_bundled_cjk_font() -> str | None:
    """Make the bundled Noto Sans CJK known to matplotlib; its family name, or None without it."""
    from matplotlib import font_manager

    path = bundled_font_file()
    if path is None:
        return None
    if not any(Path(font.fname) == path for font in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(str(path))
    names = {font.name for font in font_manager.fontManager.ttflist if Path(font.fname) == path}
    return BUNDLED_FAMILY if BUNDLED_FAMILY in names else next(iter(sorted(names)), None)

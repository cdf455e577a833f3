"""Import torchreid once, quietly: its Cython ranking module is missing from the wheel and it warns on import.

Only that one warning is silenced, and only around the import. Use attribute access (`reid.data.ImageDataset`):
`from torchreid.utils import ...` fails in the 0.2.5 layout, where everything lives under `torchreid.reid`.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)
    import torchreid

reid = torchreid.reid
VERSION = f"torchreid {torchreid.__version__} (upstream {reid.__version__})"

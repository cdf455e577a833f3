"""Any Market-1501-style root as a torchreid dataset, without copying it.

`ReidaugMarket` is registered with torchreid as "reidaug_market" and takes the Market root itself as `root`
(torchreid's `Market1501` wants `<root>/market1501[/Market-1501-v15.09.15]` and may try to download it). It reads
.jpg, .jpeg and .png (torchreid's parser: *.jpg only) through `reidaug.data.market.read_split`, so bad names fail
with one line instead of an assertion.

* train: junk (-1) and distractors (0) excluded, pids relabelled 0..N-1 in sorted order;
* query: junk and distractors excluded (they have no true match);
* gallery: everything kept, distractors as negatives and junk for `evaluate_market` to ignore (Market's rule).
Camera ids become 0-based, as in torchreid.

`torchreid_market1501(root)` builds torchreid's *own* `Market1501` on an arbitrary root (also one whose
`bounding_box_test`/`query` are symlinks): a subclass with `dataset_dir = ""` so that `<root>` itself is the
data folder. The alternative with no subclass is a symlink `<parent>/market1501 -> <root>` and `root=<parent>`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from reidaug.data.market import DISTRACTOR_PID, JUNK_PID, SPLITS, check_root, read_split
from reidaug.errors import ReidaugError
from reidaug.reid._torchreid import reid

NAME = "reidaug_market"
# ImageDataManager passes these to every dataset class; they mean nothing for a Market root.
_FOREIGN_KWARGS = ("split_id", "cuhk03_labeled", "cuhk03_classic_split", "market1501_500k")


def read_market_split(root: str | Path, split: str) -> list[tuple[str, int, int]]:
    """(path, pid, camid 0-based) of one split, with the exclusions above; train pids relabelled."""
    df = read_split(root, split)
    if split in ("train", "query"):
        df = df[~df.pid.isin([JUNK_PID, DISTRACTOR_PID])]
    if split == "train":
        label = {pid: i for i, pid in enumerate(sorted(df.pid.unique()))}
        pids = [label[p] for p in df.pid]
    else:
        pids = df.pid.tolist()
    return [(p, int(pid), int(c) - 1) for p, pid, c in zip(df.path, pids, df.camid, strict=True)]


class ReidaugMarket(reid.data.ImageDataset):
    """A Market-1501-style root (bounding_box_train, bounding_box_test, query) read in place."""

    _junk_pids = [JUNK_PID, DISTRACTOR_PID]  # left out when torchreid combines splits (combineall)

    def __init__(self, root: str = "", **kwargs):
        self.root = check_root(root, SPLITS)
        for k in _FOREIGN_KWARGS:
            kwargs.pop(k, None)
        train = read_market_split(self.root, "train")
        if not train:
            raise ReidaugError(f"no training images with an identity in {self.root / SPLITS['train']}")
        query = read_market_split(self.root, "query")
        if not query:
            raise ReidaugError(f"no query images with an identity in {self.root / SPLITS['query']}")
        gallery = read_market_split(self.root, "gallery")
        kwargs.setdefault("verbose", False)
        super().__init__(train, query, gallery, **kwargs)

    def __getitem__(self, index):
        # torchreid's read_image retries forever on an unreadable file; read once and fail with its name.
        path, pid, camid, dsetid = self.data[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError):
            raise ReidaugError(f"cannot read image {path}") from None
        if self.transform is not None:
            img = self._transform_image(self.transform, self.k_tfm, img)
        return {"img": img, "pid": pid, "camid": camid, "impath": path, "dsetid": dsetid}


def register() -> str:
    """Register `ReidaugMarket` with torchreid (idempotent); returns its name for `sources=`."""
    try:
        reid.data.register_image_dataset(NAME, ReidaugMarket)
    except ValueError:  # already registered in this process
        pass
    return NAME


class _Market1501AtRoot(reid.data.datasets.Market1501):
    dataset_dir = ""  # os.path.join(root, "") == root: the Market folders sit directly in root


def torchreid_market1501(root: str | Path, **kwargs):
    """torchreid's own `Market1501` parser on the Market root `root` (checked first: it never downloads)."""
    root = check_root(root, SPLITS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The current data structure is deprecated")
        return _Market1501AtRoot(root=str(root), **{"verbose": False, **kwargs})


register()

"""The TERAN authors' data folders, as their code reads them, mapped onto :class:`BottomUpReader`.

COCO (``DATA = data/coco``)::

    DATA/annotations/captions_train2014.json, captions_val2014.json   COCO annotation files
    DATA/annotations/coco_{train,dev,test,restval}_ids.npy            Karpathy splits (caption ids)
    DATA/features_36/bu_att/<coco id>.npz                             "feat": [36, 2048] float32
    DATA/features_36/bu_box/<coco id>.npy                             [36, 4] boxes in pixels

Flickr30k (``DATA = data/f30k``)::

    DATA/annotations/dataset_flickr30k.json        Karpathy's file: captions and splits
    DATA/features_36/bu_att/<position>.npz, bu_box/<position>.npy   position in that file
    DATA/images/sizes.pkl                          [(width, height)] by position (their cache),
                                                   or DATA/image_sizes.json, or the images

A folder with ``bu_att/`` at its top (our flat layout, see bottom_up.py) is read as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FEATURES_DIR = "features_36"
ANNOTATIONS_DIR = "annotations"
SIZE_LIST = "images/sizes.pkl"


def is_authors_layout(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds ``features_36/bu_att`` (the authors' folders), not ``bu_att``."""
    return (Path(root) / FEATURES_DIR / "bu_att").is_dir()


def authors_reader_options(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments of :class:`BottomUpReader` that read the authors' folders under ``root``
    (empty for a folder in our flat layout)."""
    base = Path(root)
    if not is_authors_layout(base):
        return {}
    annotations = base / ANNOTATIONS_DIR
    options: dict[str, Any] = {
        "features_dir": base / FEATURES_DIR,
        "annotations_dir": annotations,
        "id_lists_dir": annotations,
    }
    if (base / SIZE_LIST).is_file() and not (base / "image_sizes.json").is_file():
        options["sizes_json"] = base / SIZE_LIST
    return options


def open_bottom_up(root: str | os.PathLike[str], **kwargs: Any):
    """A :class:`BottomUpReader` of ``root`` in either layout; ``kwargs`` as the reader's."""
    from teran_es.features.bottom_up import BottomUpReader

    return BottomUpReader(root, **{**authors_reader_options(root), **kwargs})

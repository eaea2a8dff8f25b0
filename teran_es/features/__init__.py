"""Region features: readers of precomputed formats, our columnar format, synthetic data.

:func:`open_image_set` turns a :class:`~teran_es.config.DataConfig` and a split name into
an :class:`ImageCaptionSet`, whatever the format on disk.
"""

from __future__ import annotations

from pathlib import Path

from teran_es.config import DataConfig
from teran_es.errors import ConfigError
from teran_es.features.records import (
    ImageCaptionSet,
    ImageRecord,
    RecordError,
    RegionBatch,
    pad_regions,
    validate_record,
)

__all__ = [
    "ImageCaptionSet",
    "ImageRecord",
    "RecordError",
    "RegionBatch",
    "detect_format",
    "open_image_set",
    "pad_regions",
    "validate_record",
]


def detect_format(path: str | Path) -> str:
    """``bottom-up`` for a directory with ``bu_att/`` (or the authors' ``features_36/bu_att/``),
    else ``parquet``."""
    from teran_es.features.authors_layout import is_authors_layout

    p = Path(path)
    if p.is_dir() and ((p / "bu_att").is_dir() or is_authors_layout(p)):
        return "bottom-up"
    return "parquet"


def open_image_set(
    data: DataConfig,
    split: str,
    *,
    limit: int = 0,
    on_error: str = "raise",
    feature_dim: int | None = None,
    image_size: int | None = None,
    keep_pixels: bool = True,
) -> ImageCaptionSet:
    """The images of ``split`` (the first ``limit`` when > 0) from ``data.path``.

    Parquet splits are held in memory; bottom-up splits read their files on demand. The
    ``openmoji`` and ``emoji`` formats read the built image collection at ``data.path``
    (:mod:`~teran_es.features.image_table`) as pixels (:class:`~teran_es.features.pixels.ImageFile`,
    decoded at ``image_size`` and held in memory unless ``keep_pixels`` is False: then each is
    decoded once to find bad ones, and only its file is held) for a model with an image front end. Which
    collection an empty path means is the collection's to say
    (:func:`teran_es.collections.defaults.with_default_collection`), not this reader's.
    """
    if data.format in ("openmoji", "emoji"):
        from teran_es.features.image_table import iter_collection_images
        from teran_es.features.pixels import image_file_set

        if not image_size:
            raise ConfigError(f"the {data.format} format gives pixels: a model with an image front end is needed")
        if not data.path:
            raise ConfigError(
                "data.path is empty: point it at a built image collection (`teran-es openmoji info` "
                "shows where the OpenMoji one is)"
            )
        return image_file_set(
            iter_collection_images(data.path, split),
            image_size,
            name=split,
            limit=limit,
            on_error=on_error,
            captions_per_image=data.captions_per_image or None,
            keep_pixels=keep_pixels,
        )
    if not data.path:
        raise ConfigError(
            "data.path is empty: point it at a .parquet file, a directory of them, or a bottom-up root"
        )
    fmt = detect_format(data.path) if data.format in ("", "auto") else data.format
    per_image = data.captions_per_image or None
    if fmt in ("parquet", "synthetic"):
        from teran_es.features.columnar import ColumnarReader

        reader = ColumnarReader(
            data.path,
            on_error=on_error,
            feature_dim=feature_dim,
            max_regions=data.max_regions or None,
            captions_per_image=per_image,
        )
        return reader.image_set(split, limit=limit)
    if fmt == "bottom-up":
        from teran_es.features.authors_layout import open_bottom_up

        bottom_up = open_bottom_up(  # our flat layout, or the authors' folders (features_36/, annotations/)
            data.path,
            on_error=on_error,
            feature_dim=feature_dim,
            max_regions=data.max_regions or None,
            captions_per_image=per_image,
        )
        return bottom_up.image_set(split, limit=limit)
    raise ConfigError(f"unknown data format {data.format!r} (parquet | bottom-up | synthetic | openmoji | emoji)")

"""An objective's images: its sources, the decoded cache of a folder, the splits, and the batches Keras reads.

The names most callers need are here; the modules say where each lives.
"""

from search.data.images import CachedImages, Images, ImageSet, SearchData
from search.data.sources import (
    FASHION_CLASSES,
    IDX_FILES,
    IDX_PLACES,
    Part,
    read_idx,
    read_idx_pair,
    read_kaggle_csv,
    reader,
)
from search.data.splits import load_search_data

__all__ = [
    "FASHION_CLASSES",
    "IDX_FILES",
    "IDX_PLACES",
    "CachedImages",
    "ImageSet",
    "Images",
    "Part",
    "SearchData",
    "load_search_data",
    "read_idx",
    "read_idx_pair",
    "read_kaggle_csv",
    "reader",
]

"""Folders of real Fashion-MNIST images in a user's layout: one subfolder per class, JPEG and PNG of mixed sizes.

Some images are tinted (a colour per image), some stay grayscale, some are resized; a folder can also hold a
non-image file, a hidden file and an image that does not decode, as users' folders do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.data import FASHION_CLASSES, IDX_PLACES, read_idx_pair

CLASS_FOLDERS = tuple(name.replace("/", "-").replace(" ", "_").lower() for name in FASHION_CLASSES)
SIZES = ((28, 28), (40, 32), (56, 56), (24, 36), (64, 48))  # (width, height) of the files


@dataclass(frozen=True)
class Layout:
    """What a made folder holds."""

    root: Path
    classes: tuple[str, ...]
    images: int
    ignored: tuple[str, ...]


def fashion_images(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    images = read_idx_pair(IDX_PLACES[0], part)  # type: ignore[arg-type]
    return images.x[..., 0], images.y


def write_folder(
    root: Path,
    per_class: int,
    classes: int = 3,
    *,
    colour: bool = True,
    mixed_sizes: bool = True,
    extras: bool = True,
    unreadable: bool = False,
    offset: int = 0,
    part: str = "train",
) -> Layout:
    """A class-per-folder tree of `per_class` real images for each of the first `classes` Fashion-MNIST classes.

    With `colour`, two images in three are tinted RGB (the rest stay grayscale); with `mixed_sizes`, files are
    resized to several sizes; files alternate PNG and JPEG. `extras` adds a notes file and a hidden file,
    `unreadable` a `.jpg` that is not an image. `offset` skips that many images of each class.
    """
    x, y = fashion_images(part)
    rng = np.random.default_rng(offset + classes * 1000 + per_class)
    written, ignored = 0, []
    for label in range(classes):
        folder = root / CLASS_FOLDERS[label]
        folder.mkdir(parents=True, exist_ok=True)
        members = np.flatnonzero(y == label)[offset : offset + per_class]
        for count, index in enumerate(members):
            image = Image.fromarray(x[index], mode="L")
            if colour and count % 3:
                tint = rng.uniform(0.3, 1.0, size=3)
                rgb = (x[index][..., None] * tint).astype(np.uint8)
                image = Image.fromarray(rgb, mode="RGB")
            if mixed_sizes:
                image = image.resize(SIZES[count % len(SIZES)], Image.Resampling.BILINEAR)
            suffix = ".png" if count % 2 else ".jpg"
            image.save(folder / f"{CLASS_FOLDERS[label]}_{index:05d}{suffix}", quality=95)
            written += 1
    if extras:
        (root / CLASS_FOLDERS[0] / "notes.txt").write_text("photos from the shop\n")
        (root / CLASS_FOLDERS[1] / ".DS_Store").write_bytes(b"\0\1\2")
        ignored += [f"{CLASS_FOLDERS[0]}/notes.txt", f"{CLASS_FOLDERS[1]}/.DS_Store"]
    if unreadable:
        (root / CLASS_FOLDERS[0] / "broken.jpg").write_bytes(b"this is not a JPEG")
    return Layout(root, CLASS_FOLDERS[:classes], written, tuple(ignored))

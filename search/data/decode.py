"""Image files to raw pixels, with Pillow: every format and colour mode it reads, one size, one way of resizing.

Training, promotion, `atelier predict` and the data report all decode through `decode_image`, so an image is
converted and resized the same way wherever it is read. Transparent pixels become black (the background of
the raw images atelier has trained on); a photo's EXIF orientation is applied; an animated GIF gives its first
frame; 16-bit images keep their top 8 bits.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking, as Pillow's resize always is
CHUNK = 256  # images a decoding thread takes at once


@dataclass(frozen=True)
class ImageFormat:
    """What every decoded image becomes: `size` (height, width), `channels` (1 or 3), and how it got that size."""

    size: tuple[int, int]
    channels: int
    resize: str = "pad"  # pad (letterboxed in black), crop (the centre), stretch

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.size, self.channels)

    @property
    def record_bytes(self) -> int:
        return self.size[0] * self.size[1] * self.channels


class UnreadableImage(Exception):
    """A file with an image's extension that Pillow cannot decode."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension atelier decodes."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def header(path: Path) -> tuple[tuple[int, int], bool]:
    """An image's (height, width) and whether it is grayscale, read from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.mode == "P":
                palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
                gray = bool(np.all(palette == palette[:, :1]))
            else:
                gray = image.mode in GRAY_MODES
            return (height, width), gray
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UnreadableImage(path, _reason(error, path)) from None


def decode_image(path: Path, image_format: ImageFormat) -> np.ndarray:
    """One file as uint8 pixels of `image_format.shape`."""
    try:
        with Image.open(path) as image:
            image.seek(0)
            return to_pixels(ImageOps.exif_transpose(image), image_format)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise UnreadableImage(path, _reason(error, path)) from None


def to_pixels(image: Image.Image, image_format: ImageFormat) -> np.ndarray:
    """A Pillow image converted to the format's colour and resized to its size."""
    image = _flattened(image).convert("L" if image_format.channels == 1 else "RGB")
    height, width = image_format.size
    if image.size != (width, height):
        if image_format.resize == "pad":
            image = ImageOps.pad(image, (width, height), method=RESAMPLE, color=0)
        elif image_format.resize == "crop":
            image = ImageOps.fit(image, (width, height), method=RESAMPLE)
        else:
            image = image.resize((width, height), RESAMPLE)
    return np.asarray(image, dtype=np.uint8).reshape(image_format.shape)


def decode_many(
    paths: Iterable[Path], image_format: ImageFormat, threads: int | None = None
) -> Iterator[np.ndarray | UnreadableImage]:
    """Each file's pixels (or the `UnreadableImage` it raised), in order, decoded on several threads.

    Pillow releases the GIL while it decodes and resizes, so threads use every core without processes.
    """

    def decode_chunk(chunk: list[Path]) -> list[np.ndarray | UnreadableImage]:
        decoded: list[np.ndarray | UnreadableImage] = []
        for path in chunk:
            try:
                decoded.append(decode_image(path, image_format))
            except UnreadableImage as unreadable:
                decoded.append(unreadable)
        return decoded

    paths = list(paths)
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    workers = threads or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[list[np.ndarray | UnreadableImage]]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(decode_chunk, chunk))
            if len(pending) > 2 * workers:  # a bounded queue: the decoded images never pile up in memory
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _flattened(image: Image.Image) -> Image.Image:
    """Transparency composited over black; 16-bit and float images brought to 8 bits."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max() > 255 else 255.0
        return Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image


def _reason(error: BaseException, path: Path) -> str:
    """Pillow's message without the file's name (the line names it already)."""
    text = str(error).split("\n")[0].replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    return text or type(error).__name__

"""A folder of a user's images with captions, and optionally masks.

Layout (``root`` is the ``root`` setting)::

    root/
      metadata.jsonl        {"file_name": "a/cat.png", "text": "a cat"} per line
      a/cat.png
      masks/a/cat.png       optional: same relative name (or .png), class indices

or, without ``metadata.jsonl``, a ``<image>.txt`` beside each image holding
its caption.

What can go wrong with a user's files is counted, never fatal in the middle of
an epoch:

* At construction (cheap checks, no decoding): metadata lines that are not
  JSON or lack the keys, images listed but missing, images without a caption
  or (when masks are on) without a mask are left out of the index.
* While reading (decoding happens only then): an image or mask that cannot be
  decoded, or a mask with a class out of range, is skipped and the next good
  item in index order is returned in its place (wrapping around), so
  ``dataset[i]`` still returns an example and stays deterministic. The bad
  item is remembered, so it is not decoded again.

Every skip is logged as a warning (the first 10 individually, then every
100th) and counted; after every ``len(dataset)`` reads (an epoch) the summary
line is logged again if anything new was skipped. ``report()`` gives the
counts and ``summary()`` the line, for the end of training. A folder that does not exist, holds no usable
images, or has only unreadable ones raises :class:`modiff.ModiffError`.
Counts are per process: with data-loader workers each worker counts its own
skips (call ``validate()`` up front to find every bad file in one pass).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

import modiff

from .config import ImageFolderSettings

log = logging.getLogger("modiff_datasets")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_LOGGED_INDIVIDUALLY = 10


@dataclass(frozen=True)
class Entry:
    """One indexed item: the image file, its caption, its mask file."""

    image: Path
    caption: str
    mask: Path | None = None


class ImageFolderDataset:
    """Captioned images from a folder; see the module docstring for the layout."""

    def __init__(self, settings: ImageFolderSettings) -> None:
        self.settings = settings
        self.image_size = settings.image_size
        self.root = Path(settings.root).expanduser()
        if not self.root.is_dir():
            raise modiff.ModiffError(
                f"image-folder: the folder {str(self.root)!r} does not exist (or is not a folder); "
                "set [data] root to a folder of images"
            )
        self.mask_root: Path | None = None
        if settings.masks is not None:
            mask_root = Path(settings.masks).expanduser()
            self.mask_root = mask_root if mask_root.is_absolute() else self.root / mask_root
            if not self.mask_root.is_dir():
                raise modiff.ModiffError(
                    f"image-folder: the masks folder {str(self.mask_root)!r} does not exist; "
                    "fix [data] masks or remove it"
                )
        self.skipped: Counter[str] = Counter()
        self.skipped_files: list[tuple[str, str]] = []  # (path, reason), first ones only
        self._bad: set[int] = set()
        self._reads = 0
        self._reported = 0  # skips already summarised at an epoch's end
        self.entries = self._index()
        if not self.entries:
            raise modiff.ModiffError(
                f"image-folder: no usable images in {str(self.root)!r} "
                f"({self._skip_text() or 'no image files with suffixes ' + ', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add images with captions in metadata.jsonl (file_name, text) or a .txt beside each image"
            )
        if self.skipped:
            log.warning("image-folder: %s", self.summary())
            self._reported = int(sum(self.skipped.values()))
        self.num_classes = self._num_classes()

    # ------------------------------------------------------------------ index

    def _skip(self, path: Path | str, reason: str, error: BaseException | None = None) -> None:
        """Count a skipped file under ``reason`` (a short category)."""
        self.skipped[reason] += 1
        total = sum(self.skipped.values())
        detail = reason if error is None else f"{reason} ({type(error).__name__}: {error})"
        if len(self.skipped_files) < 100:
            self.skipped_files.append((str(path), detail))
        if total <= _LOGGED_INDIVIDUALLY or total % 100 == 0:
            log.warning("image-folder: skipping %s: %s (%d skipped so far)", path, detail, total)

    def _caption_source(self) -> str:
        source = self.settings.caption_source
        metadata = self.root / "metadata.jsonl"
        if source == "auto":
            return "metadata" if metadata.is_file() else "txt"
        if source == "metadata" and not metadata.is_file():
            raise modiff.ModiffError(
                f"image-folder: caption_source = 'metadata' but {str(metadata)!r} does not exist; "
                "write it (one JSON object per line with file_name and text) or use caption_source = 'txt'"
            )
        return source

    def _index(self) -> list[Entry]:
        self.caption_source = self._caption_source()
        raw = self._from_metadata() if self.caption_source == "metadata" else self._from_txt()
        entries = []
        for image, text in raw:
            mask = None
            if self.mask_root is not None:
                mask = self._mask_for(image)
                if mask is None:
                    self._skip(image, "no mask")
                    continue
            entries.append(Entry(image, text, mask))
        return entries

    def _from_metadata(self) -> list[tuple[Path, str]]:
        key = self.settings.caption_column
        out = []
        path = self.root / "metadata.jsonl"
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    self._skip(where, "metadata line is not JSON")
                    continue
                if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                    self._skip(where, "metadata line has no file_name")
                    continue
                text = row.get(key)
                if not isinstance(text, str):
                    self._skip(where, f"metadata line has no {key!r} string")
                    continue
                image = (self.root / row["file_name"]).resolve()
                if not image.is_file():
                    self._skip(image, "missing file")
                    continue
                out.append((image, text))
        return out

    def _from_txt(self) -> list[tuple[Path, str]]:
        out = []
        for image in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if self.mask_root is not None and _is_within(image, self.mask_root):
                continue
            if not image.is_file():
                continue
            txt = image.with_suffix(".txt")
            try:
                text = txt.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                self._skip(image, "no caption (.txt) file")
                continue
            except (OSError, UnicodeDecodeError):
                self._skip(txt, "unreadable caption file")
                continue
            out.append((image.resolve(), text))
        return out

    def _mask_for(self, image: Path) -> Path | None:
        assert self.mask_root is not None
        try:
            rel = image.relative_to(self.root.resolve())
        except ValueError:
            rel = Path(image.name)
        for candidate in (self.mask_root / rel, (self.mask_root / rel).with_suffix(".png")):
            if candidate.is_file():
                return candidate
        return None

    def _num_classes(self) -> int:
        if self.mask_root is None:
            return 0
        if self.settings.num_classes is not None:
            return self.settings.num_classes
        # Read every mask once: the denoiser's output width depends on it.
        top = 0
        for k, e in enumerate(self.entries):
            try:
                top = max(top, int(self._read_mask_raw(e.mask).max()))  # type: ignore[arg-type]
            except (OSError, ValueError, SyntaxError) as exc:
                self._bad.add(k)
                self._skip(e.mask or "", "unreadable mask", exc)
        return max(top + 1, 2)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> modiff.Example:
        n = len(self.entries)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for an image folder of {n} images")
        try:
            return self._first_readable(i)
        finally:
            self._reads += 1
            if self._reads % n == 0:
                self._epoch_summary()

    def _epoch_summary(self) -> None:
        """Every ``len(self)`` reads (an epoch of a sampler that visits each
        index once), log the summary if anything new was skipped."""
        total = int(sum(self.skipped.values()))
        if total != self._reported:
            self._reported = total
            log.warning("image-folder, after %d reads: %s", self._reads, self.summary())

    def _first_readable(self, i: int) -> modiff.Example:
        n = len(self.entries)
        for step in range(n):
            k = (i + step) % n
            if k in self._bad:
                continue
            try:
                return self._load(self.entries[k])
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                # PIL raises OSError (truncated/corrupt), UnidentifiedImageError
                # (an OSError), SyntaxError (broken PNG chunks) or ValueError.
                self._bad.add(k)
                self._skip(self.entries[k].image, "unreadable", exc)
        raise modiff.ModiffError(
            f"image-folder: none of the {n} images in {str(self.root)!r} can be read ({self._skip_text()})"
        )

    def _load(self, entry: Entry) -> modiff.Example:
        with Image.open(entry.image) as im:
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        image = _resize_crop(rgb, self.image_size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1) / 127.5 - 1.0))
        mask_tensor = None
        if entry.mask is not None:
            raw = self._read_mask_raw(entry.mask)
            if raw.shape != (rgb.height, rgb.width):
                raw = np.asarray(Image.fromarray(raw).resize((rgb.width, rgb.height), Image.Resampling.NEAREST))
            mask = np.asarray(_resize_crop(Image.fromarray(raw), self.image_size, Image.Resampling.NEAREST))
            if int(mask.max(initial=0)) >= self.num_classes:
                raise ValueError(f"mask class {int(mask.max())} is not below num_classes = {self.num_classes}")
            mask_tensor = torch.from_numpy(mask.astype(np.int64))
        return modiff.Example(image=tensor.to(torch.float32).clamp_(-1.0, 1.0), caption=entry.caption, mask=mask_tensor)

    @staticmethod
    def _read_mask_raw(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"mask mode {im.mode} is not a class-index image (use 8-bit grey or palette PNG)")
            a = np.asarray(im)
        if a.ndim != 2:
            raise ValueError(f"mask has shape {a.shape}, expected [H, W]")
        if a.min(initial=0) < 0:
            raise ValueError("mask has negative classes")
        return a.astype(np.int32) if a.dtype != np.uint8 else a

    def captions(self) -> Iterator[str]:
        """Every indexed caption, in index order (no image is decoded)."""
        return (e.caption for e in self.entries)

    # ------------------------------------------------------------------ reports

    def validate(self) -> dict[str, Any]:
        """Decode every item once, so every bad file is found and counted now
        rather than when an epoch reaches it; returns :meth:`report`."""
        for k in range(len(self.entries)):
            if k not in self._bad:
                try:
                    self._load(self.entries[k])
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    self._bad.add(k)
                    self._skip(self.entries[k].image, "unreadable", exc)
        return self.report()

    def report(self) -> dict[str, Any]:
        """Counts of what was used and skipped, by reason, with the first files."""
        return {
            "root": str(self.root),
            "indexed": len(self.entries),
            "unreadable": len(self._bad),
            "usable": len(self.entries) - len(self._bad),
            "skipped": int(sum(self.skipped.values())),
            "reasons": dict(self.skipped),
            "files": [{"path": p, "reason": r} for p, r in self.skipped_files[:20]],
        }

    def _skip_text(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))

    def summary(self) -> str:
        """One line: how many files were skipped and why."""
        total = int(sum(self.skipped.values()))
        if not total:
            return f"{len(self.entries)} images from {self.root}, none skipped"
        usable = len(self.entries) - len(self._bad)
        return f"{usable} usable images from {self.root}; skipped {total}: {self._skip_text()}"

    def __repr__(self) -> str:
        return f"ImageFolderDataset(root={str(self.root)!r}, images={len(self.entries)}, image_size={self.image_size})"


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _resize_crop(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Scale so the shorter side is ``size``, then cut the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))

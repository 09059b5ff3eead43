"""The image-folder dataset, including folders with broken files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import modiff
from modiff.testing import build_one
from modiff.testing.contracts import DatasetContract

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_metadata(root: Path, rows: list[Any]) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def folder_with_metadata(root: Path) -> Path:
    solid(root / "red.png", RED)
    solid(root / "sub" / "blue.jpg", BLUE, (30, 20))
    solid(root / "green.png", GREEN)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    good = (root / "red.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    write_metadata(
        root,
        [
            {"file_name": "red.png", "text": "a red picture"},
            {"file_name": "corrupt.png", "text": "broken"},
            {"file_name": "sub/blue.jpg", "text": "a blue picture"},
            {"file_name": "missing.png", "text": "gone"},
            "this line is not json",
            {"file_name": "truncated.png", "text": "half a file"},
            {"text": "no file name"},
            "",
            {"file_name": "green.png", "text": "a green picture"},
        ],
    )
    return root


def colour_of(ex: modiff.Example) -> tuple[int, int, int]:
    c = ((ex.image.mean((1, 2)) + 1) * 127.5).round().to(torch.int64).tolist()
    return tuple(c)  # type: ignore[return-value]


class TestImageFolderContract(DatasetContract):
    plugin = "image-folder"

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.settings = {"root": str(folder_with_metadata(tmp_path)), "image_size": 16}


class TestImageFolderMasksContract(DatasetContract):
    plugin = "image-folder"

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        (tmp_path / "masks").mkdir()
        for name, colour in (("a", RED), ("b", BLUE)):
            solid(tmp_path / f"{name}.png", colour)
            (tmp_path / f"{name}.txt").write_text(f"{name} caption")
            mask = np.zeros((20, 20), np.uint8)
            mask[5:15, 5:15] = 2
            Image.fromarray(mask, "L").save(tmp_path / "masks" / f"{name}.png")
        self.settings = {"root": str(tmp_path), "image_size": 8, "masks": "masks"}


def test_broken_files_are_skipped_counted_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = folder_with_metadata(tmp_path)
    with caplog.at_level(logging.WARNING, logger="modiff_datasets"):
        d = build_one("data", "image-folder", {"root": str(root), "image_size": 16})
    # missing file and bad metadata lines are found at once, without decoding anything
    assert len(d) == 5 and d.num_classes == 0
    assert d.report()["reasons"] == {
        "missing file": 1,
        "metadata line is not JSON": 1,
        "metadata line has no file_name": 1,
    }
    assert "missing.png" in caplog.text and "skipped 3" in caplog.text
    # a whole epoch: every index returns an example; corrupt ones are replaced by the next good one
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modiff_datasets"):
        captions = [d[i].caption for i in range(len(d))]
    assert "corrupt.png" in caplog.text and "truncated.png" in caplog.text
    assert "after 5 reads: 3 usable images" in caplog.text, "the epoch ends with a summary"
    assert captions == ["a red picture", "a blue picture", "a blue picture", "a green picture", "a green picture"]
    for i, colour in ((0, RED), (1, BLUE), (4, GREEN)):  # the blue one is a JPEG: allow its rounding
        assert max(abs(x - y) for x, y in zip(colour_of(d[i]), colour)) <= 3
    report = d.report()
    assert report["unreadable"] == 2 and report["usable"] == 3 and report["skipped"] == 5
    assert report["reasons"]["unreadable"] == 2
    assert {Path(f["path"]).name for f in report["files"]} >= {"corrupt.png", "truncated.png", "metadata.jsonl:5"}
    assert "skipped 5" in d.summary() and "3 usable" in d.summary()
    # reading the epoch again is identical, counts nothing twice and has nothing new to say
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modiff_datasets"):
        assert [d[i].caption for i in range(len(d))] == captions
    assert d.report()["skipped"] == 5 and not caplog.text


def test_validate_finds_every_bad_file_up_front(tmp_path: Path) -> None:
    d = build_one("data", "image-folder", {"root": str(folder_with_metadata(tmp_path)), "image_size": 16})
    report = d.validate()
    assert report["unreadable"] == 2 and report["usable"] == 3


def test_txt_captions(tmp_path: Path) -> None:
    solid(tmp_path / "one.png", RED)
    (tmp_path / "one.txt").write_text("  the first one \n", encoding="utf-8")
    solid(tmp_path / "deep" / "two.PNG", BLUE)
    (tmp_path / "deep" / "two.txt").write_text("the second one", encoding="utf-8")
    solid(tmp_path / "three.png", GREEN)  # no caption
    (tmp_path / "notes.txt").write_text("not an image")
    d = build_one("data", "image-folder", {"root": str(tmp_path), "image_size": 8})
    assert sorted(d.captions()) == ["the first one", "the second one"]
    assert d.report()["reasons"] == {"no caption (.txt) file": 1}
    assert d.caption_source == "txt"
    with pytest.raises(modiff.ModiffError, match="metadata.jsonl"):
        build_one("data", "image-folder", {"root": str(tmp_path), "caption_source": "metadata"})


def test_metadata_wins_in_auto_and_txt_can_be_forced(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", RED)
    (tmp_path / "a.txt").write_text("from txt")
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "from metadata", "alt": "other column"}])
    assert list(build_one("data", "image-folder", {"root": str(tmp_path)}).captions()) == ["from metadata"]
    assert list(build_one("data", "image-folder", {"root": str(tmp_path), "caption_source": "txt"}).captions()) == [
        "from txt"
    ]
    d = build_one("data", "image-folder", {"root": str(tmp_path), "caption_column": "alt"})
    assert list(d.captions()) == ["other column"]


def test_resize_shorter_side_and_centre_crop(tmp_path: Path) -> None:
    im = np.zeros((20, 60, 3), np.uint8)  # wide: left third red, middle green, right third blue
    im[:, :20] = RED
    im[:, 20:40] = GREEN
    im[:, 40:] = BLUE
    Image.fromarray(im).save(tmp_path / "wide.png")
    tall = np.zeros((40, 10, 3), np.uint8)
    tall[:, :] = (10, 20, 30)
    tall[15:25] = (200, 100, 50)
    Image.fromarray(tall).save(tmp_path / "tall.png")
    write_metadata(tmp_path, [{"file_name": "wide.png", "text": "w"}, {"file_name": "tall.png", "text": "t"}])
    d = build_one("data", "image-folder", {"root": str(tmp_path), "image_size": 10})
    wide = ((d[0].image + 1) * 127.5).round().to(torch.int64)
    assert wide.shape == (3, 10, 10)
    assert torch.equal(wide[:, :, 2:8], torch.tensor(GREEN).view(3, 1, 1).expand(3, 10, 6))  # only the middle stays
    t = ((d[1].image + 1) * 127.5).round().to(torch.int64)
    assert t.shape == (3, 10, 10)
    assert t[:, 2:8, :].sub(torch.tensor([200, 100, 50]).view(3, 1, 1)).abs().max() <= 2
    assert float(d[0].image.min()) >= -1 and float(d[0].image.max()) <= 1


def test_masks(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        solid(tmp_path / "img" / f"{name}.jpg", RED, (40, 20))
        (tmp_path / "img" / f"{name}.txt").write_text(name)
    (tmp_path / "masks" / "img").mkdir(parents=True)
    m = np.zeros((20, 40), np.uint8)
    m[:, 20:] = 3
    Image.fromarray(m, "L").save(tmp_path / "masks" / "img" / "a.png")  # same name with .png
    pal = Image.fromarray(np.full((20, 40), 1, np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(tmp_path / "masks" / "img" / "b.png")  # palette mask: indices, not colours
    Image.fromarray(np.full((20, 40), 9, np.uint8), "L").save(tmp_path / "masks" / "img" / "c.png")
    # d has no mask
    d = build_one("data", "image-folder", {"root": str(tmp_path), "image_size": 10, "masks": "masks"})
    assert len(d) == 3 and d.report()["reasons"] == {"no mask": 1}
    assert d.num_classes == 10, "read from the masks: largest class + 1"
    a = d[0].mask
    assert a.dtype == torch.int64 and a.shape == (10, 10)
    assert set(a.unique().tolist()) == {0, 3} and torch.equal(a[:, :5], torch.zeros(10, 5, dtype=torch.int64))
    assert set(d[1].mask.unique().tolist()) == {1}
    # with num_classes given, a mask with a larger class is skipped, not fatal
    d = build_one(
        "data", "image-folder", {"root": str(tmp_path), "image_size": 10, "masks": "masks", "num_classes": 4}
    )
    assert d[2].caption == "a" and d.report()["unreadable"] == 1
    # colour masks are not class maps
    Image.new("RGB", (40, 20), RED).save(tmp_path / "masks" / "img" / "a.png")
    d = build_one(
        "data", "image-folder", {"root": str(tmp_path), "image_size": 10, "masks": "masks", "num_classes": 4}
    )
    assert d[0].caption == "b" and "mode RGB" in d.report()["files"][-1]["reason"]
    with pytest.raises(modiff.ModiffError, match="masks folder"):
        build_one("data", "image-folder", {"root": str(tmp_path), "masks": "nowhere"})


def test_clear_errors_for_unusable_folders(tmp_path: Path) -> None:
    with pytest.raises(modiff.ModiffError, match="does not exist"):
        build_one("data", "image-folder", {"root": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(modiff.ModiffError, match="no usable images"):
        build_one("data", "image-folder", {"root": str(tmp_path / "empty")})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    (bad / "x.txt").write_text("x")
    (bad / "y.png").write_bytes(b"")
    (bad / "y.txt").write_text("y")
    d = build_one("data", "image-folder", {"root": str(bad)})
    with pytest.raises(modiff.ModiffError, match="none of the 2 images"):
        d[0]
    with pytest.raises(ValueError, match="root"):
        modiff.registry().lookup("data", "image-folder").validate({})

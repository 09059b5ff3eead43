"""CLIP's tokenizer training is deterministic: the same captions give the same
files in every process, and saving a loaded tokenizer (what a resume does)
writes the files it was loaded from, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modiff_clip.hf import learn_merges, load_tokenizer, save_tokenizer, train_tokenizer

#: A small corpus with many ties between equally frequent pairs (the `tokenizers`
#: trainer broke them differently from one process to the next).
CORPUS = ["a red circle", "a blue square", "the green triangle left", "purple star at top", "a red square",
          "big blue circle"]
FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")

TRAIN = """
import sys
from pathlib import Path
from modiff_clip.hf import save_tokenizer, train_tokenizer
save_tokenizer(train_tokenizer({corpus!r}, 560), Path(sys.argv[1]))
"""


def files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


@pytest.mark.slow
def test_twelve_processes_train_the_same_tokenizer_files(tmp_path: Path) -> None:
    def train(i: int) -> dict[str, bytes]:
        out = tmp_path / str(i)
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=str(i), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", TRAIN.format(corpus=CORPUS), str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return files(out)

    with ThreadPoolExecutor(max_workers=3) as pool:  # a few at a time
        results = list(pool.map(train, range(12)))
    for name in FILES:
        assert len({r[name] for r in results}) == 1, f"{name} differs between processes"


def test_ties_go_to_the_pair_that_sorts_first() -> None:
    # every pair occurs once: the merges come in the order of the pairs themselves
    assert learn_merges({("c", "a", "b</w>"): 1}, 5) == [("a", "b</w>"), ("c", "ab</w>")]
    assert learn_merges({("b", "a</w>"): 2, ("a", "b</w>"): 2}, 1) == [("a", "b</w>")]
    # a more frequent pair comes first, whatever it sorts as
    assert learn_merges({("x", "y</w>"): 3, ("a", "b</w>"): 2}, 2) == [("x", "y</w>"), ("a", "b</w>")]
    # overlapping occurrences merge left to right, and counts follow the merges
    assert learn_merges({("a", "a", "a</w>"): 1}, 3) == [("a", "a"), ("aa", "a</w>")]


def test_merges_learned_make_whole_words_and_stop_when_nothing_is_left() -> None:
    tokenizer = train_tokenizer(["a red circle", "a red circle"], 10_000)
    assert tokenizer.tokenize("a red circle") == ["a</w>", "red</w>", "circle</w>"]
    assert len(tokenizer) == 514 + 2 + 5  # "red</w>" takes two merges, "circle</w>" five, then no pair is left
    assert len(train_tokenizer(["a red circle"], 520)) == 520


def test_saving_a_loaded_tokenizer_writes_the_same_files(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    save_tokenizer(train_tokenizer(CORPUS, 560), first)
    save_tokenizer(load_tokenizer(first), second)  # what a resume does with a run's assets
    assert files(second) == files(first)

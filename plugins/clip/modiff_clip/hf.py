"""Everything that touches transformers and tokenizers: quiet loading,
folder layouts, the byte-level BPE tokenizer trained on captions.

Public API of modiff-clip: the helpers every plugin that loads a CLIP text
encoder from disk needs — :func:`quiet`, :func:`resolve_pretrained`,
:func:`load_text_model` (the one loader, with its missing-weights check),
:func:`text_config`, :func:`load_tokenizer`, :func:`model_type` and
:func:`config_key` — live here once, and what runs prompts through the
encoder in :mod:`modiff_clip.encoding`. ``modiff-sd`` (whose ``sd-clip`` is
this CLIP, used the way Stable Diffusion uses it) imports them and declares
modiff-clip as a dependency, rather than keeping a second copy that drifts.

transformers takes seconds to import, so this module is imported only by the
factories, never by a plugin's ``__init__``; transformers itself is imported
inside the functions.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import modiff

__all__ = [
    "VOLATILE_CONFIG_KEYS",
    "config_key",
    "load_text_model",
    "load_tokenizer",
    "model_type",
    "quiet",
    "resolve_pretrained",
    "save_tokenizer",
    "text_config",
    "train_tokenizer",
]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: What marks a word's last symbol in CLIP's BPE.
END_OF_WORD = "</w>"
_WEIGHT_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
#: Entries transformers adds to a tokenizer's config when it loads one from a folder: they
#: describe that load, not the tokenizer, and would make a resumed run's files differ.
_HOW_IT_WAS_LOADED = frozenset({"is_local", "local_files_only", "name_or_path", "_commit_hash"})
#: Config entries that describe where or how a config was written, not the model.
VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"})


@contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' and tokenizers' progress bars and load reports,
    restoring the user's settings afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        hub_logger.setLevel(hub_level)


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the 256 byte values."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def train_tokenizer(captions: Iterable[str], vocab_size: int) -> Any:
    """A CLIP tokenizer whose BPE merges are learned from ``captions``, offline.

    The vocabulary is laid out like OpenAI's: every byte, every byte ending a
    word (``x</w>``), the learned merges, then the start and end tokens. With
    all 512 byte tokens present no text is ever out of vocabulary: an unknown
    token would be mapped to the end token, and the pooled output (read at the
    first end token) would then come from the wrong position.

    The merges are learned here (:func:`learn_merges`), not by the
    ``tokenizers`` trainer: that one breaks ties between equally frequent
    pairs by ids it hands out in hash-map order, which differs from one
    process to the next, so two runs with the same settings could tokenize a
    prompt differently.
    """
    n_merges = vocab_size - 2 * 256 - 2
    corpus = [c for c in captions if c.strip()]
    if not corpus or n_merges <= 0:
        return tokenizer_from_merges([])
    backend = tokenizer_from_merges([]).backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for caption, times in Counter(corpus).items():  # a dataset repeats its captions: split each once
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(caption)):
            words[(*word[:-1], word[-1] + END_OF_WORD)] += times
    return tokenizer_from_merges(learn_merges(words, n_merges))


def learn_merges(words: Mapping[tuple[str, ...], int], n_merges: int) -> list[tuple[str, str]]:
    """Up to ``n_merges`` byte-pair merges for ``words`` (each a sequence of
    symbols, with how often it occurs): each time the most frequent adjacent
    pair is merged everywhere. Ties go to the pair that sorts first (as a
    pair of strings), so the result depends on the words and their counts
    only: never on hash seeds, set order, the process or the machine."""
    symbols = [list(word) for word in words]
    counts = list(words.values())
    pairs: Counter[tuple[str, str]] = Counter()
    holders: dict[tuple[str, str], set[int]] = {}
    for i, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            pairs[pair] += counts[i]
            holders.setdefault(pair, set()).add(i)
    # the most frequent pair, first in sort order among equals, is at the top; an entry whose
    # count is no longer the pair's is stale and skipped (a changed count pushes a new entry)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < n_merges:
        negative, best = heapq.heappop(heap)
        if pairs.get(best) != -negative:
            continue
        merges.append(best)
        changed: set[tuple[str, str]] = set()
        for i in holders.pop(best, set()):
            old, new = symbols[i], _merge_pair(symbols[i], best)
            for pair in zip(old, old[1:]):
                pairs[pair] -= counts[i]
                changed.add(pair)
            for pair in zip(new, new[1:]):
                pairs[pair] += counts[i]
                holders.setdefault(pair, set()).add(i)
                changed.add(pair)
            symbols[i] = new
        pairs.pop(best, None)
        for pair in changed - {best}:
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], pair))
            else:
                del pairs[pair]
    return merges


def _merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    """``word`` with every occurrence of ``pair`` (left to right, not overlapping) made one symbol."""
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def tokenizer_from_merges(merges: list[tuple[str, str]]) -> Any:
    """A CLIP tokenizer over the full byte alphabet plus ``merges``."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    alphabet = byte_alphabet()
    for token in [*alphabet, *(c + END_OF_WORD for c in alphabet)]:
        vocab[token] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    with quiet():
        return CLIPTokenizer(
            vocab=vocab, merges=list(merges), bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS
        )


def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    """The tokenizer in every layout loaders expect: tokenizer.json (fast
    tokenizers) and vocab.json + merges.txt (the classic CLIP files)."""
    with quiet():
        tokenizer.save_pretrained(str(directory))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if any(key in config for key in _HOW_IT_WAS_LOADED):  # a resume saves what it loaded: keep the files as they were
        config = {k: v for k, v in config.items() if k not in _HOW_IT_WAS_LOADED}
        text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        config_path.write_text(text, encoding="utf-8")
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (directory / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_tokenizer(directory: Path) -> Any:
    """The CLIP tokenizer saved in ``directory`` (tokenizer.json, or vocab.json
    and merges.txt); a missing or unreadable one is a :class:`modiff.WeightsError`."""
    from transformers import CLIPTokenizer

    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise modiff.WeightsError(
            f"no CLIP tokenizer in {directory}: expected tokenizer.json, or vocab.json and merges.txt"
        )
    try:
        with quiet():
            return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        raise modiff.WeightsError(
            f"could not load the CLIP tokenizer in {directory}: {type(exc).__name__}: {exc}"
        ) from exc


# --------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------


def resolve_pretrained(path: str | Path) -> tuple[Path, Path]:
    """``(model folder, tokenizer folder)`` for a Hugging Face CLIP folder or a
    Stable Diffusion (diffusers) folder with ``text_encoder/`` and ``tokenizer/``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise modiff.ModiffError(
            f"pretrained = {str(path)!r} is not a folder; modiff never downloads models, so give the path of a "
            "local Hugging Face CLIP folder (config.json, model.safetensors, tokenizer files) or of a Stable "
            "Diffusion folder that has text_encoder/ and tokenizer/"
        )
    model_dir = root / "text_encoder" if (root / "text_encoder" / "config.json").is_file() else root
    token_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else model_dir
    if not (model_dir / "config.json").is_file():
        raise modiff.ModiffError(
            f"no config.json in {model_dir}: pretrained must be a Hugging Face CLIP folder "
            "(or a Stable Diffusion folder with text_encoder/config.json)"
        )
    return model_dir, token_dir


def model_type(directory: Path) -> str:
    """``model_type`` of ``directory/config.json`` (``"clip"``, ``"clip_text_model"``, ...)."""
    try:
        return str(json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise modiff.WeightsError(f"{directory / 'config.json'} is unreadable: {exc}") from exc


def config_key(config: Any) -> str:
    """A transformers config as a canonical string, without the entries that
    say where or how it was written: two configs with the same key describe
    the same model shape, so a loaded model need not be rebuilt."""

    def clean(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: clean(v) for k, v in sorted(d.items()) if k not in VOLATILE_CONFIG_KEYS}
        return d

    return json.dumps(clean(config.to_dict()), sort_keys=True, default=str)


def has_safetensors(directory: Path) -> bool:
    return any(directory.glob("*.safetensors"))


def _check_clip(directory: Path) -> str:
    """``directory``'s model type, refused unless it is a CLIP or CLIP text-encoder folder."""
    kind = model_type(directory)
    if kind not in {"clip", "clip_text_model"}:
        raise modiff.WeightsError(
            f"{directory} holds a {kind or 'unknown'!r} model, not CLIP (model_type 'clip' or 'clip_text_model')"
        )
    return kind


def text_config(directory: Path) -> Any:
    """The ``CLIPTextConfig`` of a text-encoder folder, or the text tower's of a full CLIP folder."""
    from transformers import CLIPTextConfig

    kind = _check_clip(directory)
    data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if kind == "clip":
        data = data.get("text_config", {})
    with quiet():
        return CLIPTextConfig.from_dict({k: v for k, v in data.items() if k != "model_type"})


def load_text_model(directory: Path, *, require_weights: bool = True) -> Any:
    """A ``CLIPTextModel`` with weights, from a text-encoder or a full CLIP folder.

    The one loader of a CLIP text encoder from disk (``clip`` and modiff-sd's
    ``sd-clip`` both use it). Only safetensors weights are read (pickled
    ``pytorch_model.bin`` files are refused); weights missing from the folder
    are an error rather than the silent random initialisation transformers
    would otherwise do. With ``require_weights = False`` a folder with no
    weights file at all (a run's assets: its weights are in the run's
    safetensors, loaded next) gives a model shaped by its config.
    """
    import torch
    from transformers import CLIPTextModel

    _check_clip(directory)
    if not has_safetensors(directory):
        pickles = [f for f in _WEIGHT_PICKLES if (directory / f).exists()]
        if not require_weights and not pickles:
            with quiet():
                return CLIPTextModel(text_config(directory))
        found = f" (found {', '.join(pickles)}: pickled weights are refused)" if pickles else ""
        raise modiff.WeightsError(
            f"no *.safetensors weights in {directory}{found}; convert the weights to safetensors where you trust "
            "them, e.g. `CLIPTextModel.from_pretrained(folder).save_pretrained(folder)`"
        )
    try:
        with quiet():
            model, info = CLIPTextModel.from_pretrained(
                str(directory),
                local_files_only=True,
                use_safetensors=True,
                output_loading_info=True,
                dtype=torch.float32,
            )
    except Exception as exc:
        raise modiff.WeightsError(
            f"could not load a CLIP text model from {directory}: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise modiff.WeightsError(
            f"the weights in {directory} do not cover the CLIP text model ({len(missing)} missing, e.g. {shown})"
        )
    return model

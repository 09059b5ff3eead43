"""Hypothesis strategies for modiff components and settings."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def prompts(max_size: int = 200) -> st.SearchStrategy[str]:
    """Any unicode text, including empty, whitespace-only and very long prompts."""
    return st.one_of(
        st.text(max_size=max_size),
        st.just(""),
        st.text(alphabet=st.sampled_from(" \t\n"), max_size=5),
        st.builds(
            lambda w, n: " ".join([w] * n), st.sampled_from(["red", "circle", "ünïcödé", "🙂"]), st.integers(50, 300)
        ),
    )


def prompt_batches(min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[list[str]]:
    return st.lists(prompts(), min_size=min_size, max_size=max_size)


def batch_sizes(max_value: int = 4) -> st.SearchStrategy[int]:
    return st.integers(1, max_value)


def image_sizes(multiple_of: int = 1, max_value: int = 32) -> st.SearchStrategy[int]:
    """Sizes that are multiples of ``multiple_of`` (a downscale or the UNet's total stride)."""
    return st.integers(1, max(1, max_value // multiple_of)).map(lambda k: k * multiple_of)


def toml_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    )


def toml_values() -> st.SearchStrategy[Any]:
    """Anything a TOML file can hold: scalars, lists and nested tables."""
    return st.recursive(
        toml_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
        ),
        max_leaves=12,
    )


def settings_tables() -> st.SearchStrategy[dict[str, Any]]:
    """Junk role tables: a ``plugin`` that may or may not be a string, and random keys."""
    return st.dictionaries(
        st.one_of(st.sampled_from(["plugin", "channels", "steps", "eta", "seed"]), st.text(min_size=1, max_size=10)),
        toml_values(),
        max_size=5,
    )

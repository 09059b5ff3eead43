"""Captions for scenes, and reading a caption or prompt back into objects.

A caption is built from a template: an optional prefix, one clause per object
joined by ``" and "`` or ``"; "``, and an optional suffix. Clauses vary word
order (position first or last), filler (``there is``, ``a picture of``) and
whether the size is said; each template also has an unplaced form, its clause
without the position, for captions that leave the place out (``a red
circle``). Because clauses are only ever joined by ``and`` or ``;`` and each
clause names exactly one colour, one shape and at most one
position, :func:`parse` can read every caption the world writes (and most
prompts a person would type in its vocabulary) back into objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .world import CELLS, COLOURS, SHAPES, SIZES, ShapeObject


@dataclass(frozen=True)
class Template:
    """How a caption is put together. ``clause`` may use ``{size}``,
    ``{colour}``, ``{shape}`` and ``{position}``."""

    clause: str
    unplaced: str
    joiner: str = " and "
    prefix: str = ""
    suffix: str = ""

    @property
    def says_size(self) -> bool:
        return "{size}" in self.clause

    def format(self, objects: Sequence[ShapeObject], *, say_small: bool = False, placed: bool = True) -> str:
        """The caption; with ``say_small`` a template that leaves the size out
        still says it for a small shape ("a small red square at the top"), so
        that only large shapes go unsized. With ``placed=False`` every clause
        is the template's ``unplaced`` form, which names no position (and the
        objects need no cell): what a user's first prompt looks like."""
        clauses = []
        for obj in objects:
            if placed and obj.cell is None:
                raise ValueError(f"cannot caption {obj.pair} with its place: it has no cell")
            colour = obj.colour
            if say_small and obj.size == "small" and not self.says_size:
                colour = f"small {colour}"
            words = {"size": obj.size or "large", "colour": colour, "shape": obj.shape}
            if placed:
                clauses.append(self.clause.format(position=CELLS[obj.cell], **words))
            else:
                clauses.append(self.unplaced.format(**words))
        return self.prefix + self.joiner.join(clauses) + self.suffix


#: The caption templates, in a fixed order (the index is part of a scene's
#: determinism). Four say the size, four do not; the second clause of each is
#: the same without the position.
TEMPLATES: tuple[Template, ...] = (
    Template("a {size} {colour} {shape} in the {position}", "a {size} {colour} {shape}"),
    Template("{colour} {shape}, {position}", "{colour} {shape}", joiner="; "),
    Template("a {size} {colour} {shape} at the {position}", "a {size} {colour} {shape}", prefix="there is "),
    Template("a {colour} {shape} at the {position}", "a {colour} {shape}"),
    Template("{position}: a {colour} {shape}", "a {colour} {shape}", joiner="; "),
    Template("a {size} {colour} {shape} in the {position}", "a {size} {colour} {shape}", prefix="a picture of "),
    Template("{size} {colour} {shape} in the {position}", "{size} {colour} {shape}", suffix=" on a black background"),
    Template("the {position} has a {colour} {shape}", "a {colour} {shape}"),
)


def caption(
    objects: Sequence[ShapeObject], template: int = 0, *, say_small: bool = False, placed: bool = True
) -> str:
    """The caption of ``objects`` with template number ``template``
    (``0 <= template < len(TEMPLATES)``), naming objects in the given order
    (``say_small`` and ``placed``: see :meth:`Template.format`)."""
    if not objects:
        raise ValueError("a caption needs at least one object")
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template {template} does not exist; use 0..{len(TEMPLATES) - 1}")
    return TEMPLATES[template].format(objects, say_small=say_small, placed=placed)


class CaptionError(ValueError):
    """A prompt the shapes vocabulary cannot read."""


def _alternation(words: Sequence[str]) -> str:
    # Longest first, so that "top left" wins over "top".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_POSITION_WORDS = {name: i for i, name in enumerate(CELLS)}
_POSITION_WORDS.update({"centre": 4, "middle": 4, "top center": 1, "bottom center": 7})
_SIZE_WORDS = {"small": "small", "large": "large", "big": "large", "little": "small"}
_COLOUR_RE = re.compile(rf"\b({_alternation(COLOURS)})\b")
_SHAPE_RE = re.compile(rf"\b({_alternation(SHAPES)})\b")
_POSITION_RE = re.compile(rf"\b({_alternation(list(_POSITION_WORDS))})\b")
_SIZE_RE = re.compile(rf"\b({_alternation(list(_SIZE_WORDS))})\b")
_SPLIT_RE = re.compile(r"\s*(?:;|\band\b)\s*")

assert set(SIZES) <= set(_SIZE_WORDS)


def parse(prompt: str) -> list[ShapeObject]:
    """The objects a caption or prompt names, in order.

    Clauses are separated by ``and`` or ``;``; a clause naming nothing (pure
    filler) is ignored; every other clause must name exactly one colour and one
    shape, and may name a position and a size. Objects without a position get
    ``cell=None`` (any cell is then right). Raises :class:`CaptionError`,
    naming the prompt and the vocabulary, for anything else.
    """
    text = " ".join(prompt.lower().split())
    objects: list[ShapeObject] = []
    for clause in _SPLIT_RE.split(text):
        colours = _COLOUR_RE.findall(clause)
        shapes = _SHAPE_RE.findall(clause)
        positions = _POSITION_RE.findall(clause)
        sizes = _SIZE_RE.findall(clause)
        if not (colours or shapes or positions or sizes):
            continue
        if len(colours) != 1 or len(shapes) != 1 or len(positions) > 1 or len(sizes) > 1:
            raise CaptionError(
                f"cannot read {prompt!r}: the part {clause!r} must name exactly one colour "
                f"({', '.join(COLOURS)}), one shape ({', '.join(SHAPES)}) and at most one position "
                f"({', '.join(CELLS)}); separate objects with 'and' or ';'"
            )
        objects.append(
            ShapeObject(
                colour=colours[0],
                shape=shapes[0],
                cell=_POSITION_WORDS[positions[0]] if positions else None,
                size=_SIZE_WORDS[sizes[0]] if sizes else None,
            )
        )
    if not objects:
        raise CaptionError(
            f"cannot read {prompt!r}: it names no object; write e.g. 'a red circle in the top left'"
        )
    return objects

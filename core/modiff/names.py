"""Names a user writes that become folders: ``[run] name`` and an ablation's ``name``.

One rule for both, because such a name is joined to a folder the user chose
(``runs_dir``) and whatever is then written, or removed by ``--overwrite``,
must stay inside that folder: a name is exactly one path component, so
``runs_dir / name`` is always a child of ``runs_dir``, never the folder itself
(``.``), its parent (``..``), a path elsewhere (``/tmp``, ``a/b``), a hidden
folder, or a name of blanks that no one can see in a listing.
"""

from __future__ import annotations

import re

#: One folder name: no separator or control character anywhere; not starting
#: with '.' (hidden, '.', '..') or a blank; not ending with a blank; 1 to 128 characters.
FOLDER_NAME = re.compile(r"^(?=.{1,128}$)[^./\\\s\x00-\x1f][^/\\\x00-\x1f]*(?<!\s)$", re.DOTALL)

#: What :data:`FOLDER_NAME` allows, in words, for error messages.
FOLDER_NAME_RULE = (
    "one folder name such as \"shapes-clip\": not empty, no '/' or '\\', not starting with '.', "
    "no leading or trailing blanks, at most 128 characters"
)


def is_folder_name(name: object) -> bool:
    """Whether ``name`` can name a folder inside another (see :data:`FOLDER_NAME`)."""
    return isinstance(name, str) and FOLDER_NAME.match(name) is not None

"""Whether an evaluation would measure a model on the images it was trained on.

``compress`` trains on a dataset's ``train`` split (a flat folder, or A/ and
B/ without split folders, is all ``train``), and ``eval`` picks ``test``, else
``val``, else whatever is there. When what is there is the training split, the
metrics describe fit, not generalisation: :func:`training_split_warning` says so
in one line, for the report's warnings.
"""
from __future__ import annotations

import os

from . import is_builtin
from .folders import resolve_layout


def training_split_warning(data: str | os.PathLike, split: str | None = None) -> str | None:
    """One line when evaluating ``data`` on ``split`` measures the training images, else None.

    ``split`` None means the split ``eval`` would choose (``Layout.eval_split``).
    Built-in tasks render their test split from other seeds, so only an
    explicit ``split="train"`` is flagged for them.
    """
    source = str(data)
    if is_builtin(source):
        if split == "train":
            return f"{source} is evaluated on its train split, the images a student is trained on: use --split test"
        return None
    layout = resolve_layout(source)
    split = split or layout.eval_split
    if split == "all":
        return (f"{source} has no test or val split, so it is evaluated on its training images (the metrics show "
                f"fit, not held-out quality): put held-out images in a test/ folder (testA/ and testB/ for "
                f"unpaired data) or evaluate on another folder with --data")
    if split == "train":
        return (f"{source} is evaluated on its train split, the images a student is trained on: add a test/ or val/ "
                f"split (testA/, testB/ for unpaired data) and evaluate on it")
    return None

"""What keeps a host's Alembic commands off flask-push's branch by mistake.

Two commands that Flask-Migrate's tutorials teach do the wrong thing once
flask-push's branch sits beside the host's, and Alembic does them without a word:

- ``flask db migrate`` before the host has a branch of its own builds on
  flask-push's head and writes the file into flask-push's installed package, where
  the next ``pip install`` loses it and the database then names a revision that no
  longer exists. :func:`refuse_revision_in_our_folder` is an Alembic post-write hook
  that :func:`flask_push.migrations.include` adds: it removes such a file again and
  says how to start the host's branch.
- ``flask db downgrade`` (``-1``) with both branches applied steps back whichever
  head Alembic reads first from ``alembic_version`` (Alembic only warns that this is
  ambiguous), often flask-push's, dropping its data when the host meant its own last
  revision. :func:`refuse_ambiguous_downgrade`, called by each of flask-push's
  revisions as its downgrade begins, refuses that and names both branches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from alembic import op
from alembic.script import write_hooks
from alembic.util import CommandError

#: the name of the post-write hook, and of its options in ``[post_write_hooks]``
HOOK: Final = "flask_push"
#: the option naming the host's own versions folder, for the sentence
HOST_VERSIONS_OPTION: Final = "host_versions"

_BRANCH_LABEL: Final = "flask_push"

# "-1", "-2": a step relative to the current heads, with no branch named
_RELATIVE_STEP: Final = re.compile(r"^-(\d+)$")


@write_hooks.register(HOOK)
def refuse_revision_in_our_folder(path: str, options: Mapping[str, str]) -> None:
    """Remove a revision file Alembic just wrote into flask-push's folder, and say how
    the host starts (or extends) its own branch instead."""
    versions_dir = _versions_dir()
    if Path(path).resolve().parent != versions_dir:
        return
    Path(path).unlink()
    host_versions = options.get(HOST_VERSIONS_OPTION) or "migrations/versions"
    raise CommandError(
        f"That revision would have gone into flask-push's own migrations folder "
        f"({versions_dir}), on top of flask-push's branch, where reinstalling "
        "flask-push loses it; it is removed again. Your revisions go on a branch of "
        'your own: start it with `flask db migrate -m "..." --head base --branch-label '
        f"app --version-path {host_versions}`, then extend it with `flask db migrate -m "
        '"..." --head app@head` (README: Database migrations).'
    )


def _versions_dir() -> Path:
    # read at each call, from the package (which imports this module first)
    from flask_push import migrations

    return migrations.VERSIONS_DIR


def hook_options(host_versions: str | None) -> dict[str, str]:
    """The ``[post_write_hooks]`` options that run :func:`refuse_revision_in_our_folder`."""
    options = {f"{HOOK}.type": HOOK}
    if host_versions:
        options[f"{HOOK}.{HOST_VERSIONS_OPTION}"] = _relative(host_versions)
    return options


def _relative(path: str) -> str:
    """``path`` as the host would type it: relative to the working folder when inside it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except ValueError:  # another drive, on Windows
        return path


def refuse_ambiguous_downgrade() -> None:
    """Refuse a downgrade by a number of steps (``flask db downgrade``, ``-1``) that
    Alembic resolved to flask-push's branch while another branch's head is applied too.

    Called by each of flask-push's revisions before it drops anything. A downgrade
    that names a branch (``flask_push@-1``, ``app@-1``), a revision or ``base`` is
    what the host asked for, and goes ahead.
    """
    context = op.get_context()
    if context.as_sql:
        return  # offline, Alembic itself asks for explicit revisions
    step = _RELATIVE_STEP.match(str(context.opts.get("destination_rev") or ""))
    if step is None:
        return
    script = context.script
    assert script is not None  # set by the command that runs a revision
    versions_dir = _versions_dir()
    others = [
        revision
        for revision in script.get_revisions(context.get_current_heads())
        if revision is not None and Path(revision.path).resolve().parent != versions_dir
    ]
    if not others:
        return
    names = sorted(
        min(revision.branch_labels) if revision.branch_labels else revision.revision
        for revision in others
    )
    steps = step.group(1)
    yours = ", ".join(f"`flask db downgrade {name}@-{steps}`" for name in names)
    raise CommandError(
        f"`downgrade -{steps}` is ambiguous here: this database has flask-push's branch "
        f"and yours ({', '.join(names)}) applied, and Alembic would step back "
        "flask-push's, dropping its data; nothing was stepped back. Name the branch: "
        f"{yours} for yours, `flask db downgrade {_BRANCH_LABEL}@-{steps}` for flask-push's."
    )

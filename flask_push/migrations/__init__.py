"""Alembic migrations for flask-push's ``push_*`` tables.

flask-push ships its migrations as an independent Alembic branch labelled
``flask_push``, kept in :data:`VERSIONS_DIR`. A host that uses Flask-Migrate
adds that folder to its own migration environment::

    import flask_push.migrations

    migrate = Migrate(app, db)
    migrate.configure(flask_push.migrations.include)

and then upgrades both its own branch and flask-push's: ``flask db upgrade heads``.

With two branches there are two heads, so the host's own revisions name their
branch: the first one starts it (``flask db migrate --head base --branch-label
app --version-path migrations/versions``), later ones extend it (``flask db
migrate --head app@head``). Without ``--head``, Alembic would build on
flask-push's head, and write the file into :data:`VERSIONS_DIR`.

Each revision's ``upgrade`` and ``downgrade`` take the ``engine_name`` that
Flask-Migrate's ``--multidb`` environment passes, and run on the app's own
database only (``""``), where flask-push's models are.

This module needs Alembic (``pip install '../flask-push[migrations]'``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Final, TypeVar

from alembic.config import Config
from alembic.util import CommandError, coerce_resource_to_filename

from . import guards

__all__ = ["BRANCH_LABEL", "VERSIONS_DIR", "include"]

#: the folder holding flask-push's revision files
VERSIONS_DIR: Final[Path] = Path(__file__).resolve().parent / "versions"

#: the Alembic branch label of flask-push's revisions, as in ``flask db downgrade flask_push@base``
BRANCH_LABEL: Final = "flask_push"

C = TypeVar("C", bound=Config)

# The values Alembic accepts for ``path_separator`` / ``version_path_separator``.
_SEPARATORS: Final = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}

# Alembic 1.16 introduced ``path_separator`` (for ``version_locations`` and
# ``prepend_sys_path``) and deprecated ``version_path_separator``; it also moved
# the parsing of both lists onto ``Config``.
_HAS_PATH_SEPARATOR: Final = hasattr(Config, "get_prepend_sys_paths_list")


def include(config: C) -> C:
    """Add :data:`VERSIONS_DIR` to the ``version_locations`` of an Alembic ``config``.

    The host's own version locations are kept: its ``version_locations`` if it
    sets any, else the ``versions`` folder of its ``script_location`` (which is
    what Alembic uses by default). Calling it twice adds the folder once.

    The list is written back with the separator the config names
    (``path_separator``, or the older ``version_path_separator``). When it names
    none, the existing values are read the legacy way (on spaces and commas)
    and the separator is set to ``os``, as Alembic recommends, so that paths
    with spaces keep working.

    It also puts a post-write hook first in ``[post_write_hooks]``
    (:func:`~flask_push.migrations.guards.refuse_revision_in_our_folder`): a revision
    of the host's written into :data:`VERSIONS_DIR` is removed again, with a sentence
    on how to start the host's own branch.

    It returns ``config``, so it can be given to Flask-Migrate as it is::

        migrate.configure(flask_push.migrations.include)

    :raises alembic.util.CommandError: when the configured separator occurs in
        the path of :data:`VERSIONS_DIR`, which could then not be listed.
    """
    separator_name = _separator_name(config)
    with warnings.catch_warnings():
        # Our own reading of a config without a separator; once we set one,
        # Alembic has nothing to warn about.
        warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
        locations = _version_locations(config)
        prepend_sys_path = _prepend_sys_paths(config) if separator_name is None else None

    if any(_same_dir(location, VERSIONS_DIR) for location in locations):
        return config
    _add_write_hook(config, locations[0] if locations else None)
    locations.append(str(VERSIONS_DIR))

    set_separator = separator_name is None
    if separator_name is None:
        separator_name = "os"
    separator = _SEPARATORS[separator_name]
    if separator in str(VERSIONS_DIR):
        raise CommandError(
            f"flask-push's migrations folder {VERSIONS_DIR} contains the path separator "
            f"{separator_name!r} of the Alembic config; set path_separator = os in alembic.ini."
        )
    if set_separator and _HAS_PATH_SEPARATOR:
        config.set_main_option("path_separator", separator_name)
        if prepend_sys_path:
            # ``path_separator`` governs this list too: keep its meaning.
            config.set_main_option("prepend_sys_path", _join(prepend_sys_path, separator))
    elif set_separator:
        config.set_main_option("version_path_separator", separator_name)
    config.set_main_option("version_locations", _join(locations, separator))
    return config


def _add_write_hook(config: Config, host_versions: str | None) -> None:
    """Put :data:`guards.HOOK` first among the config's post-write hooks, keeping the
    host's (from ``[post_write_hooks]``, or from ``pyproject.toml``, which Alembic reads
    only while the ini file has no such section)."""
    section = "post_write_hooks"
    has_section = config.file_config.has_section(section)
    if _HAS_PATH_SEPARATOR:  # Alembic 1.16 added pyproject.toml and get_hooks_list
        hooks = [dict(hook) for hook in config.get_hooks_list()]
    else:
        hooks = []
    names = [hook["_hook_name"] for hook in hooks]
    if has_section and not _HAS_PATH_SEPARATOR:
        listed = config.get_section(section, {}).get("hooks", "")
        names = [name for name in listed.replace(",", " ").split() if name]
    if not has_section:
        # the host's pyproject.toml hooks, as ini options, since ours make a section
        for hook in hooks:
            name = hook.pop("_hook_name")
            for key, value in hook.items():
                config.set_section_option(section, f"{name}.{key}", value.replace("%", "%%"))
    for key, value in guards.hook_options(host_versions).items():
        config.set_section_option(section, key, value.replace("%", "%%"))
    config.set_section_option(section, "hooks", ", ".join([guards.HOOK, *names]))


def _separator_name(config: Config) -> str | None:
    names = (
        ("path_separator", "version_path_separator")
        if _HAS_PATH_SEPARATOR
        else ("version_path_separator",)
    )
    for name in names:
        value = config.get_main_option(name)
        if value is not None:
            if value not in _SEPARATORS:
                raise CommandError(
                    f"{value!r} is not a valid value for {name}; "
                    f"expected one of {', '.join(map(repr, _SEPARATORS))}"
                )
            return value
    return None


def _version_locations(config: Config) -> list[str]:
    """The version locations Alembic would use for ``config`` right now."""
    if _HAS_PATH_SEPARATOR:
        listed = config.get_version_locations_list()
    else:  # Alembic < 1.16 parsed the option in ScriptDirectory.from_config
        listed = _split_legacy(config, config.get_main_option("version_locations"))
    if listed:
        return [str(location) for location in listed if str(location)]
    # Alembic 1.16 reads it from pyproject.toml too, when alembic.ini has none
    if hasattr(config, "get_alembic_option"):
        script_location = config.get_alembic_option("script_location")
    else:
        script_location = config.get_main_option("script_location")
    if script_location is None:
        raise CommandError("No 'script_location' key found in configuration.")
    return [str(Path(coerce_resource_to_filename(script_location), "versions"))]


def _prepend_sys_paths(config: Config) -> list[str] | None:
    if not _HAS_PATH_SEPARATOR or config.get_main_option("prepend_sys_path") is None:
        return None
    return config.get_prepend_sys_paths_list()


def _split_legacy(config: Config, value: str | None) -> list[str]:
    if not value:
        return []
    name = config.get_main_option("version_path_separator")
    if name is None:
        return [part for part in value.replace(",", " ").split() if part]
    return [part.strip() for part in value.split(_SEPARATORS[name]) if part.strip()]


def _join(paths: list[str], separator: str) -> str:
    # ``set_main_option`` goes through ConfigParser interpolation: escape ``%``.
    return separator.join(path.replace("%", "%%") for path in paths)


def _same_dir(location: str, directory: Path) -> bool:
    try:
        return Path(coerce_resource_to_filename(location)).resolve() == directory
    except (OSError, ModuleNotFoundError):
        return False

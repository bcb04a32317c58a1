"""The README runs as written: every Python block, and the Quickstart's commands.

Each example is marked with an HTML comment right above its fence, which says how
it runs (the comment does not show on a rendered page):

- ``<!-- example: file NAME -->``: saved as NAME in a fresh folder (the Quickstart's
  ``shop.py``);
- ``<!-- example: shell [NAME] -->``: each ``$ `` line is run there in order, and must
  succeed and print the lines shown under it (if any);
- ``<!-- example: app -->``: run in an app context of ``shop.create_app()``, with
  ``shop.py``'s names (``push``, ``db``, ...) at hand;
- ``<!-- example: pytest NAME -->``: saved as NAME beside ``shop.py`` and run with
  pytest, through flask-push's own pytest plugin (its ``push_fake_*`` fixtures);
- ``<!-- example: alembic -->``: ``shop.py`` changed as the migrations section says,
  then its ``shell alembic`` commands;
- ``<!-- example: config -->``: config lines that ``init_app`` must accept;
- ``<!-- example: browser NAME -->``: the page (``page``) and its script, served
  and opened in Chromium by ``tests/test_browser.py``.

``test_fresh_virtualenv`` follows Install and Quickstart word for word in a new
virtualenv; the others run the examples in this one, faster.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import need_service

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_MARKED = re.compile(
    r"^<!-- example: (?P<kind>[\w-]+)(?: (?P<arg>\S+))? -->\n"
    r"```(?P<lang>\w+)\n(?P<code>.*?)^```$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Example:
    kind: str
    arg: str | None
    code: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind}{' ' + self.arg if self.arg else ''})"


def examples(kind: str | None = None, arg: object = ...) -> list[Example]:
    """The marked examples, in order: of one kind, and with one ``arg`` (None: none)."""
    text = README.read_text(encoding="utf-8")
    found = [
        Example(m["kind"], m["arg"], m["code"], text.count("\n", 0, m.start("code")) + 1)
        for m in _MARKED.finditer(text)
    ]
    return [e for e in found if kind in (None, e.kind) and arg in (..., e.arg)]


def one(kind: str, arg: str | None = None) -> Example:
    [example] = examples(kind, arg)
    return example


def test_every_python_block_is_a_run_example() -> None:
    text = README.read_text(encoding="utf-8")
    marked = {e.line for e in examples()}
    for match in re.finditer(r"^```python$", text, re.M):
        line = text.count("\n", 0, match.end()) + 2
        assert line in marked, f"README.md:{line}: a Python block without an example marker"
    assert {e.kind for e in examples()} >= {"file", "shell", "app", "pytest", "alembic", "config"}


# -- running them ---------------------------------------------------------------------


def run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    """Run a command; fail with its output when it fails."""
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{output}"
    return result.stdout


def run_shell(example: Example, cwd: Path, bin_dir: Path, env: dict[str, str]) -> None:
    """Run each ``$ `` line of a console example; compare the output shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in example.code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    assert steps, f"{example}: no commands"
    for command, shown in steps:
        words = shlex.split(command, comments=True)
        target = None
        if ">" in words:  # one redirection of stdout, as in `... > push_keys.py`
            at = words.index(">")
            words, target = words[:at], words[at + 1]
        program = bin_dir / words[0]
        argv = [str(program if program.exists() else words[0]), *words[1:]]
        output = run(argv, cwd, env, f"{example}: $ {command}")
        if target is not None:
            (cwd / target).write_text(output, encoding="utf-8")
        if shown:
            assert output.splitlines() == shown, f"{example}: $ {command} printed:\n{output}"


def environment(bin_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSH_", "FLASK_"))}
    env.pop("PYTHONPATH", None)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A folder holding the Quickstart's files, as a reader would save them."""
    for example in examples("file"):
        assert example.arg, f"{example}: a file example needs a name"
        (tmp_path / example.arg).write_text(example.code, encoding="utf-8")
    return tmp_path


def here() -> Path:
    """This virtualenv's bin folder."""
    return Path(sys.executable).parent


def test_quickstart_commands(shop: Path) -> None:
    run_shell(one("shell", None), shop, here(), environment(here()))


def test_app_examples(shop: Path) -> None:
    """Every ``app`` example, in order, in one app context of the Quickstart's app."""
    blocks = examples("app")
    runner = textwrap.dedent(
        """
        import sys
        import shop
        app = shop.create_app({"TESTING": True})
        for path, line in zip(sys.argv[1::2], sys.argv[2::2]):
            code = compile("\\n" * (int(line) - 1) + open(path).read(), "README.md", "exec")
            with app.app_context():
                exec(code, vars(shop))
        print("ran", len(sys.argv) // 2)
        """
    )
    (shop / "run_examples.py").write_text(runner, encoding="utf-8")
    args: list[str] = []
    for number, example in enumerate(blocks):
        path = shop / f"example_{number}.py"
        path.write_text(example.code, encoding="utf-8")
        args += [str(path), str(example.line)]
    env = environment(here())
    run_shell(one("shell", None), shop, here(), env)  # the keys, as the Quickstart makes them
    output = run([sys.executable, "run_examples.py", *args], shop, env, "the app examples")
    assert output.strip() == f"ran {len(blocks)}"


@pytest.mark.parametrize("migrations", [False, True], ids=["create_all", "alembic"])
def test_pytest_examples(shop: Path, migrations: bool) -> None:
    """The tests pass with the Quickstart's shop.py, and with it changed as "Database
    migrations" says (which once left their databases without tables)."""
    run_shell(one("shell", None), shop, here(), environment(here()))  # with the app's own keys
    if migrations:
        to_alembic(shop)
    names: list[str] = []
    for example in examples("pytest"):
        assert example.arg, f"{example}: a pytest example needs a file name"
        (shop / example.arg).write_text(example.code, encoding="utf-8")
        names.append(example.arg)
    output = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *names],
        shop,
        environment(here()),
        f"the pytest examples ({', '.join(names)})",
    )
    assert re.search(rf"^{pytest_examples_count()} passed\b", output, re.M), output


def pytest_examples_count() -> int:
    """How many tests the README's pytest examples define, so that a run that collected
    fewer (a file skipped, say) does not pass as theirs."""
    return sum(len(re.findall(r"^def test_", e.code, re.M)) for e in examples("pytest"))


def to_alembic(shop: Path) -> None:
    """shop.py changed as "Database migrations" says."""
    source = (shop / "shop.py").read_text(encoding="utf-8")
    create_all = "    with app.app_context():\n        db.create_all()"
    assert create_all in source and "push = Push(db=db)\n" in source
    text = README.read_text(encoding="utf-8")
    assert "replace the last two lines before `return app`" in text
    assert "with `migrate.init_app(app, db)`" in text
    lines = source.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("from flask_push import"))
    head = "".join(lines[: at + 1]) + one("alembic").code
    source = head + "".join(lines[at + 1 :])
    replaced = one("alembic", "create_app").code
    assert replaced.startswith("    migrate.init_app(app, db)\n")
    source, count = re.subn(
        r"    with app\.app_context\(\):\n        db\.create_all\(\)[^\n]*\n",
        lambda _: replaced,
        source,
    )
    assert count == 1
    (shop / "shop.py").write_text(source, encoding="utf-8")


def test_alembic_path(shop: Path) -> None:
    """shop.py changed as "Database migrations" says, then its commands."""
    to_alembic(shop)
    env = environment(here())
    run_shell(one("shell", "alembic"), shop, here(), env)
    stats = run([sys.executable, "-m", "flask", "--app", "shop", "push", "stats"], shop, env, "")
    assert stats.startswith("subscriptions  active 0, dead 0"), stats


def test_alembic_path_after_the_quickstart(shop: Path) -> None:
    """A reader who ran the Quickstart first has tables that db.create_all() made:
    `upgrade` says in one line what to run, and the README's stamp then works."""
    env = environment(here())
    run_shell(one("shell", None), shop, here(), env)  # makes instance/shop.db's tables
    to_alembic(shop)
    flask = [sys.executable, "-m", "flask", "--app", "shop", "db"]
    run([*flask, "init"], shop, env, "db init")
    refused = subprocess.run(
        [*flask, "upgrade", "heads"], cwd=shop, env=env, capture_output=True, text=True
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1, said
    assert "`flask db stamp flask_push@head`" in said and "Traceback" not in said, said
    run_shell(one("shell", "alembic-stamp"), shop, here(), env)
    stats = run([sys.executable, "-m", "flask", "--app", "shop", "push", "stats"], shop, env, "")
    assert stats.startswith("subscriptions  active 0, dead 0"), stats


def test_config_examples(make_app: object) -> None:
    from flask import Config

    for example in examples("config"):
        config = Config(str(ROOT))
        exec(compile(example.code, "README.md", "exec"), {}, config)  # noqa: S102
        values = {k: v for k, v in config.items() if k.isupper()}
        assert values, f"{example}: no config keys"
        make_app(**values)  # type: ignore[operator]  # init_app accepts them


# -- a newcomer's machine ---------------------------------------------------------------


def source_tree(destination: Path) -> Path:
    """This repository as a clone of it holds it: the files git knows (committed or not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_fresh_virtualenv(tmp_path: Path) -> None:
    """Install and Quickstart, word for word, in a new virtualenv: install from the
    clone, save shop.py, make the keys, run the first `flask push` command, and run
    the testing section's tests through the installed pytest plugin."""
    if shutil.which("git") is None:
        need_service("git (to copy the repository as a clone has it)", RuntimeError("absent"))
    clone = source_tree(tmp_path / "flask-push")
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    venv.create(app_dir / ".venv", with_pip=True)
    bin_dir = app_dir / ".venv" / "bin"
    env = environment(bin_dir)
    for line in _install_lines():
        words = shlex.split(line, comments=True)
        words = [w.replace("../flask-push", str(clone)) for w in words]
        result = subprocess.run(
            [str(bin_dir / "pip"), *words[1:], "--quiet", "--disable-pip-version-check"],
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0 and "Could not find a version" in result.stderr:
            need_service("the package index (to install dependencies)", RuntimeError(line))
        assert result.returncode == 0, f"$ {line}\n{result.stdout}{result.stderr}"
    for example in examples("file"):  # shop.py, and wsgi.py that mounts it below the root
        (app_dir / str(example.arg)).write_text(example.code, encoding="utf-8")
    run_shell(one("shell", None), app_dir, bin_dir, env)
    for example in examples("pytest"):
        (app_dir / str(example.arg)).write_text(example.code, encoding="utf-8")
    # one `pytest` over them all, as a reader runs it (each run pays pytest's start)
    output = run(
        [str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        app_dir,
        env,
        "the testing section's tests in the fresh virtualenv",
    )
    assert re.search(rf"^{pytest_examples_count()} passed\b", output, re.M), output


def _install_lines() -> list[str]:
    """The Install section's lines a newcomer needs for the Quickstart and the tests."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Install") : text.index("## Quickstart")]
    lines = [line[2:] for line in section.splitlines() if line.startswith("$ pip install")]
    wanted = [line for line in lines if "[all]" not in line and "[fcm,apns]" not in line]
    assert any("[testing]" in line for line in wanted), lines
    return wanted


def test_the_quickstart_says_the_shell_is_not_live_on_memory() -> None:
    """The Quickstart sends a newcomer to `flask shell` to try the inbox with a page
    open; on the default memory:// backplane the page's bell never showed the item
    live, and only the Live events section, far below, said why."""
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart") : text.index("## Configuration")]
    shell = quickstart[quickstart.index("`flask --app shop shell` to try them") :]
    paragraph = shell[: shell.index("<!-- example:")]
    for needed in ("memory://", "PUSH_BACKPLANE_URL", "(#live-events)"):
        assert needed in paragraph, (needed, paragraph)

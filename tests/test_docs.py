"""The documents stay true: every ``sanet-*`` command shown in README.md and docs/*.md parses with today's CLI (flags
exist, choices are valid, numbers are numbers), every relative link and image resolves, the README stays a short
product page whose first screen holds the two commands, and the generated CLI reference is fresh."""
import importlib
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
GENERATED = {REPO / "docs" / "cli.md"}  # made from the parsers themselves (docs/cli_reference.py)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def console_scripts():
    """{script name: (module, function)} from pyproject.toml's [project.scripts]."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return {m.group(1): tuple(m.group(2).split(":")) for m in re.finditer(r'^([\w-]+)\s*=\s*"([\w.:]+)"', block, re.M)}


def parser_for(script):
    """The argparse parser behind a console script: sanet.cli's table, else the module's ``parser()``."""
    from sanet import cli

    module, _ = console_scripts()[script]
    if module == "sanet.cli":
        return cli.PARSERS[script[len("sanet-"):]]()
    return importlib.import_module(module).parser()


def shell_lines(block):
    """The logical lines of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [line for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]


def sanet_commands(line):
    """Every ``sanet-X ...`` (or ``python -m sanet.cli X ...``) argv in one shell line, wherever it sits (after
    ``&&``, inside ``docker run IMAGE ...``, after env assignments)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    tokens, found, current = list(lexer), [], []
    for token in tokens + [";"]:
        if token in SEPARATORS:
            for index, word in enumerate(current):
                if word in console_scripts():
                    found.append((word, current[index + 1:]))
                    break
                if word == "sanet.cli" and index + 1 < len(current):
                    found.append(("sanet-" + current[index + 1], current[index + 2:]))
                    break
            current = []
        else:
            current.append(token)
    return found


def documented_commands():
    for path in DOCS:
        if path in GENERATED:
            continue
        text = path.read_text()
        # shell blocks hold whole commands; an inline `sanet-x --flag value` in prose is a fragment (flags and choices only)
        lines = [(line, False) for block in FENCE.findall(text) for line in shell_lines(block)]
        outside = FENCE.sub("", text)
        lines += [(span, True) for span in INLINE.findall(outside) if span.startswith("sanet-") and " " in span]
        for line, fragment in lines:
            for script, argv in sanet_commands(line):
                yield pytest.param(script, argv, fragment, id="{}: {}".format(path.name, line[:80]))


def check_fragment(parser, argv):
    """Every --flag of a prose fragment exists, and the words after a flag with choices are among them."""
    for index, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        action = parser._option_string_actions.get(token.split("=", 1)[0])
        assert action is not None, "{} is not a flag of {}".format(token, parser.prog)
        for value in argv[index + 1:] if action.choices else ():
            if value.startswith("-") or value in ("...", "X"):
                break
            assert value in action.choices, "{} {}: not one of {}".format(token, value, sorted(action.choices))


@pytest.mark.parametrize("script, argv, fragment", list(documented_commands()))
def test_documented_command_parses_with_todays_cli(script, argv, fragment, capsys):
    assert script in console_scripts(), "{} is not an installed command".format(script)
    if fragment:
        check_fragment(parser_for(script), argv)
        return
    try:
        parser_for(script).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, "{} {}: {}".format(script, " ".join(argv), capsys.readouterr().err.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_and_images_resolve(path):
    for target in LINK.findall(path.read_text()):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.exists(), "{} links to {}, which does not exist".format(path.name, target)


def test_readme_is_a_short_product_page_with_the_two_commands_first():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, "README.md has {} lines: move detail into docs/".format(len(lines))
    first_screen = "\n".join(lines[:40])
    assert "sanet-bench" in first_screen and "bash .ci/run" in first_screen
    extras = re.search(r'pip install [^\n]*-e "\.\[([\w,]+)\]"', first_screen).group(1).split(",")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert all(re.search(r"^{} = \[".format(extra), pyproject, re.M) for extra in extras), extras


def test_cli_reference_is_fresh():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "cli_reference.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

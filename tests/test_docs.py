"""The Markdown holds together: every relative link and #anchor resolves, and every command shown in
a fenced block of README.md, docs/*.md and config/README.md names a Makefile target, workflow rule,
file, meddap subcommand or option that exists."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import REPO, SNAKEMAKE

# Markdown files whose fenced commands are checked (the links of every Markdown file are).
COMMAND_DOCS = ["README.md", "config/README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
# Files a command in the docs takes that the reader writes, with where the docs say so.
READER_FILES = {"busi-here.yaml": "docs/usage.md, Cost plan: it holds `dataset: {root: ../shared/data/busi}`"}
# Commands shown in a block that this test does not check (with why).
UNCHECKED = {"pip": "a package installer: its arguments are package names"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console", "text", ""}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`]+`")
SNAKEMAKE_RULE_TARGET_OPTIONS = {"--forcerun", "-R", "--until", "-U", "--omit-from", "-O", "--allowed-rules"}
SNAKEMAKE_FILE_OPTIONS = {"--configfile", "--configfiles", "--snakefile", "-s", "--profile", "--workflow-profile"}
# snakemake options whose value is not a target (one value each), so it is not read as one.
SNAKEMAKE_VALUE_OPTIONS = {"--cores", "-c", "--jobs", "-j", "--report", "--directory", "-d", "--set-threads"}


# ---------------------------------------------------------------------------- Markdown parsing


def markdown_files() -> list[str]:
    """Tracked Markdown files, and new ones git does not ignore (so a file is checked before its commit)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        listed = [str(p.relative_to(REPO)) for p in REPO.rglob("*.md") if ".venv" not in p.parts]
    return sorted(name for name in listed if name and (REPO / name).is_file())


@dataclass
class Block:
    lang: str
    line: int  # of the first line inside the fence, 1-based
    lines: list[str]


@dataclass
class Markdown:
    prose: str  # the text outside fenced blocks (fenced lines blanked, so line numbers hold)
    blocks: list[Block]


@cache
def parse(path: Path) -> Markdown:
    prose, blocks, fence, block = [], [], None, None
    for number, line in enumerate(path.read_text().split("\n"), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), Block(match.group(2).lower(), number + 1, [])
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                blocks.append(block)
                fence = None
            else:
                block.lines.append(line)
            prose.append("")
        else:
            prose.append(line)
    return Markdown("\n".join(prose), blocks)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated one gets -1, -2, ... as on GitHub."""
    seen: Counter = Counter()
    found = set()
    for line in parse(path).prose.split("\n"):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link and image outside code; a link's text may span lines."""
    prose = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), parse(path).prose)
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def broken_link(source: Path, target: str) -> str | None:
    """Why a link does not resolve, or None."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http(s), mailto: not followed
        return None
    path_part, _, anchor = target.partition("#")
    linked = (source.parent / unquote(path_part)).resolve() if path_part else source
    if not linked.exists():
        return f"{path_part}: no such file"
    if path_part and source.resolve().is_relative_to(REPO.resolve()) and not linked.is_relative_to(REPO.resolve()):
        return f"{path_part}: outside the repository"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"#{anchor}: no such heading in {path_part or source.name}"
    return None


# ---------------------------------------------------------------------------- commands in the docs


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.words)}"


def block_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command text) of a shell block: continuation lines joined; in console and text blocks
    only the lines after a `$ ` prompt; in a block without a language only lines that start with a
    command this test knows (others are output, listings, messages). A comment `# = COMMAND` says
    what the line above runs, and is checked too."""
    commands, pending, start = [], "", 0
    for offset, line in enumerate(block.lines):
        if block.lang in ("console", "text"):
            if line.lstrip().startswith("$ "):
                commands.append((block.line + offset, line.lstrip()[2:]))
            continue
        if not pending:
            start = block.line + offset
        if line.lstrip().startswith("# = "):  # the command a shortcut above stands for
            line = line.lstrip()[4:]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append((start, pending + line))
        pending = ""
    return commands


def split_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a line (split at ;, &&, ||, |), without VAR=value prefixes
    and comments."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return [text.split()]
    commands, current = [], []
    for word in [*words, ";"]:
        if word in (";", "&&", "||", "|"):
            while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                commands.append(current)
            current = []
        else:
            current.append(word)
    return commands


def program(words) -> str:
    name = Path(words[0]).name if words else ""
    return {"python3": "python", "meddap": "meddap"}.get(name, name)


CHECKERS: dict = {}


def documented_commands() -> list[Command]:
    found = []
    for doc in COMMAND_DOCS:
        for block in parse(REPO / doc).blocks:
            if block.lang not in SHELL_BLOCKS:
                continue
            for line, text in block_commands(block):
                for words in split_commands(text):
                    if block.lang == "" and program(words) not in CHECKERS:
                        continue  # output, a file listing or an error message
                    found.append(Command(doc, line, tuple(words)))
    return found


@cache
def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


@cache
def rule_names() -> set[str]:
    texts = [(REPO / "Snakefile").read_text(), *(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))]
    return {m.group(1) for text in texts for m in re.finditer(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M)}


@cache
def rule_output_dirs() -> set[str]:
    """The first folder under results/ that some rule writes (results/<this>/...)."""
    texts = [p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")]
    return {m.group(1) for text in texts for m in re.finditer(r"results/([A-Za-z_]+)", text)}


def options_in_help(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))


@cache
def snakemake_options() -> set[str]:
    result = subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True, check=True)
    return options_in_help(result.stdout)


def _meddap_help(args: list[str]) -> str:
    from meddap.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*args, "--help"])
    return out.getvalue()


@cache
def meddap_subcommands() -> set[str]:
    choices = re.search(r"\{([\w,-]+)\}", _meddap_help([]))
    assert choices, "meddap --help lists no subcommands"
    return set(choices.group(1).split(","))


@cache
def meddap_options(sub: str) -> set[str]:
    return options_in_help(_meddap_help([sub]))


@cache
def module_options(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, f"python -m {module} --help failed:\n{result.stderr[-2000:]}"
    return options_in_help(result.stdout)


@cache
def written_by_documented_commands() -> set[str]:
    """Files a documented command writes (`--out FILE`), which a later command may read."""
    written = set()
    for command in documented_commands():
        words = command.words
        written |= {words[i + 1] for i, word in enumerate(words[:-1]) if word == "--out"}
    return written


def placeholder(word: str) -> bool:
    return "<" in word or ">" in word or word.isupper()


def file_problem(word: str, what: str = "file") -> str | None:
    """Why a path a command names does not exist, or None (results/ paths are a run's outputs)."""
    if placeholder(word):
        return None
    if word.startswith("results/"):
        top = word.split("/")[1]
        return None if top in rule_output_dirs() else f"{word}: no rule writes results/{top}/"
    if word in written_by_documented_commands() or word in READER_FILES:
        return None
    return None if (REPO / word).exists() else f"{word}: no such {what} in the repository"


def option_problems(words, known: set[str], where: str) -> list[str]:
    return [
        f"{word.split('=')[0]}: not an option of {where}"
        for word in words
        if word.startswith("-") and word != "-" and not word.startswith("---") and word.split("=")[0] not in known
    ]


def values_after(words, options: set[str]) -> list[str]:
    """The values that follow any of these options, up to the next option."""
    values, taking = [], False
    for word in words:
        if word.startswith("-"):
            taking = word in options
        elif taking:
            values.append(word)
    return values


def check_make(words) -> list[str]:
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    problems = [f"{t}: not a Makefile target" for t in targets if t not in makefile_targets()]
    return problems + [p for w in words[1:] if w.startswith("SHARD=") for p in [file_problem(w[6:])] if p]


def check_snakemake(words) -> list[str]:
    problems = option_problems(words[1:], snakemake_options(), "snakemake --help")
    rules = rule_names()
    for value in values_after(words[1:], SNAKEMAKE_RULE_TARGET_OPTIONS):
        if "/" in value or "." in value:
            problems.append(file_problem(value))
        elif not placeholder(value) and value not in rules:
            problems.append(f"{value}: no rule of that name in workflow/rules/*.smk")
    for value in values_after(words[1:], SNAKEMAKE_FILE_OPTIONS):
        problems.append(file_problem(value))
    # positional targets: not the value of an option
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
            continue
        if word.startswith("-"):
            skip = word in SNAKEMAKE_VALUE_OPTIONS
            takes_list = word in SNAKEMAKE_RULE_TARGET_OPTIONS | SNAKEMAKE_FILE_OPTIONS | {"--cleanup-metadata"}
            skip = skip or takes_list
            if takes_list:
                break  # a list option takes every value after it: snakemake reads no target there
            continue
        problems.append(file_problem(word) if "/" in word else None if word in rules else f"{word}: no such rule")
    return [p for p in problems if p]


def check_meddap(words) -> list[str]:
    if len(words) < 2 or words[1] not in meddap_subcommands():
        return [f"meddap {words[1] if len(words) > 1 else ''}: not a subcommand ({sorted(meddap_subcommands())})"]
    problems = option_problems(words[2:], meddap_options(words[1]), f"meddap {words[1]} --help")
    problems += [file_problem(v) for v in values_after(words[2:], {"--configfile"})]
    return [p for p in problems if p]


def check_python(words) -> list[str]:
    args = words[1:]
    if args[:1] == ["-c"]:
        return []
    if args[:1] == ["-m"]:
        module = args[1]
        if importlib.util.find_spec(module) is None:
            return [f"python -m {module}: no such module"]
        if module.startswith("meddap"):
            return option_problems(args[2:], module_options(module), f"python -m {module} --help")
        return []
    return [p for p in [file_problem(args[0])] if p]


def check_bash(words) -> list[str]:
    return [p for p in [file_problem(words[1])] if p]


def check_pytest(words) -> list[str]:
    paths = [w.split("::")[0] for w in words[1:] if not w.startswith("-") and ("/" in w or w.endswith(".py"))]
    return [p for p in map(file_problem, paths) if p]


CHECKERS.update(
    make=check_make,
    snakemake=check_snakemake,
    meddap=check_meddap,
    python=check_python,
    bash=check_bash,
    pytest=check_pytest,
)


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("doc", markdown_files())
def test_every_relative_link_and_anchor_resolves(doc):
    source = REPO / doc
    broken = []
    for line, target in links(source):
        why = broken_link(source, target)
        if why:
            broken.append(f"{doc}:{line}: ({target}) {why}")
    assert not broken, "\n".join(broken)


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_documented_command_names_what_exists(command):
    name = program(command.words)
    if name in UNCHECKED:
        return
    assert name in CHECKERS, f"{command}: {name} is a command this test cannot check (add a checker or UNCHECKED)"
    problems = CHECKERS[name](list(command.words))
    assert not problems, f"{command}\n" + "\n".join(problems)


def test_the_docs_show_commands_and_the_readme_stays_short():
    assert {program(c.words) for c in COMMANDS} >= {"make", "snakemake", "meddap", "python", "bash"}
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_the_readme_maps_every_subpackage():
    subpackages = {p.parent.name for p in (REPO / "src" / "meddap").glob("*/__init__.py")}
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in subpackages if f"`meddap.{name}`" not in readme)
    assert not missing, f"README.md's package map lacks {missing}"


def meddap_name_problem(name: str) -> str | None:
    """Why a dotted `meddap.x.y` name is not a module of src/meddap or a def, class or assignment in one."""
    parts = name.split(".")
    for end in range(len(parts), 1, -1):
        base = REPO / "src" / Path(*parts[:end])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[end:]
            if not rest:
                return None
            pattern = rf"^\s*(?:def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]"
            found = len(rest) == 1 and re.search(pattern, source.read_text(), re.M)
            return None if found else f"{'.'.join(rest)} is not defined in {source.relative_to(REPO)}"
    return "no such module under src/"


def test_every_meddap_name_in_the_docs_exists():
    """The Markdown names modules as `meddap.stage.module` (after the package was reorganised)."""
    wrong = [
        f"{doc}: {name}: {why}"
        for doc in markdown_files()
        for name in sorted(set(re.findall(r"(?<![\w/.-])meddap(?:\.[a-z_]\w*)+", (REPO / doc).read_text())))
        if name.rsplit(".", 1)[-1] not in ("yaml", "py", "json", "md")
        for why in [meddap_name_problem(name)]
        if why
    ]
    assert not wrong, "\n".join(wrong)


def test_slugs_follow_github():
    assert slug("Stale inputs and `meddap verify`") == "stale-inputs-and-meddap-verify"
    assert slug("On a GPU: the SD v1.5 architecture at 224 px") == "on-a-gpu-the-sd-v15-architecture-at-224-px"
    assert slug("results/report/: how to read the report") == "resultsreport-how-to-read-the-report"
    assert slug("Failures, interruptions and reproducibility") == "failures-interruptions-and-reproducibility"
    assert slug("snake_case [link](x.md) *here*") == "snake_case-link-here"


def test_the_checks_can_fail(tmp_path):
    """Each check finds what it is for: a missing file, a missing heading, a repeated heading's
    anchor, an unknown make target, rule, meddap subcommand or option, module and file."""
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n## Part\n\n## Part\n\n```bash\n# [no](link.md)\n```\n")
    assert broken_link(doc, "missing.md") == "missing.md: no such file"
    assert broken_link(doc, "#part") is None and broken_link(doc, "#part-1") is None
    assert broken_link(doc, "#part-2") and broken_link(doc, "#nowhere")
    assert broken_link(doc, "https://example.org/x.md#y") is None
    assert links(doc) == []  # a link in a fenced block is code
    assert check_make(["make", "no-such-target"]) and not check_make(["make", "run"])
    assert check_snakemake(["snakemake", "--forcerun", "no_such_rule"])
    assert check_snakemake(["snakemake", "--no-such-option"])
    assert check_snakemake(["snakemake", "--configfile", "config/missing.yaml"])
    assert check_snakemake(["snakemake", "results/no_such_folder/x"])
    assert not check_snakemake(["snakemake", "--cores", "all", "--forcerun", "train_lora", "results/lora/fold0"])
    assert check_meddap(["meddap", "no-such-sub"]) and check_meddap(["meddap", "plan", "--no-such-option"])
    assert not check_meddap(["meddap", "plan", "--configfile", "config/busi.yaml", "--device", "cpu"])
    assert check_python(["python", "-m", "meddap.no_such_module"]) and check_python(["python", "no_such.py"])
    assert check_bash(["bash", "bench/no_such.sh"]) and check_pytest(["pytest", "tests/test_no_such.py"])
    assert meddap_name_problem("meddap.diffusion.phantom") and meddap_name_problem("meddap.data.phantom.NoSuch")
    assert (
        meddap_name_problem("meddap.data.phantom") is None
        and meddap_name_problem("meddap.config.resolve.resolve") is None
    )

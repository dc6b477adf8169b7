"""The shell reader: what a shell string will run, read the way the shell reads it.

The guards (runbook.safety.guards) judge the simple commands this module
finds. Wrappers are read through (sudo, env, nice, timeout, nohup, su -c,
eval, `$(...)`, the scripts of `sh -c` / `bash -lc`, a script fed to
`bash -s`), and relative paths are resolved against a preceding `cd`.

Example::

    >>> [c.words for c in parse_commands("cd /opt/dealix && sudo -n rm -f .env")]
    [['cd', '/opt/dealix'], ['rm', '-f', '.env']]
    >>> parse_commands("cd /opt/dealix && rm -f .env")[1].cwd
    '/opt/dealix'
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "\n", "|&", "`"}
_PUNCT = ";&|()<>`\n"
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
GLOB = re.compile(r"[*?\[]")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "rbash"}
# shell words that may precede a command without being one
_KEYWORDS = {"!", "{", "}", "then", "do", "else", "elif", "if", "while", "until"}
# a script nested deeper than this is not read further (and is not a way around the rules:
# nothing below this depth is trusted, see `_parse`)
_MAX_DEPTH = 8


@dataclass(frozen=True)
class _Wrapper:
    """A command that runs another command: which of its options take a value, which
    take a shell script (`su -c`), and how many words sit between its options and the
    command (`timeout 10`)."""

    short_value: str = ""
    long_value: frozenset[str] = frozenset()
    short_script: str = ""
    long_script: frozenset[str] = frozenset()
    positional: int = 0


_WRAPPERS: dict[str, _Wrapper] = {
    "sudo": _Wrapper(
        "ugCDhprtTU",
        frozenset(
            {
                "--user",
                "--group",
                "--close-from",
                "--chdir",
                "--host",
                "--prompt",
                "--role",
                "--type",
                "--command-timeout",
                "--other-user",
            }
        ),
    ),
    "doas": _Wrapper("uC"),
    "env": _Wrapper("uCS", frozenset({"--unset", "--chdir", "--split-string"})),
    "nice": _Wrapper("n", frozenset({"--adjustment"})),
    "ionice": _Wrapper("cnpPu", frozenset({"--class", "--classdata", "--pid", "--pgid", "--uid"})),
    "timeout": _Wrapper("sk", frozenset({"--signal", "--kill-after"}), positional=1),
    "nohup": _Wrapper(),
    "setsid": _Wrapper(),
    "command": _Wrapper(),
    "builtin": _Wrapper(),
    "exec": _Wrapper("a"),
    "time": _Wrapper("fo", frozenset({"--format", "--output"})),
    "stdbuf": _Wrapper("ioe", frozenset({"--input", "--output", "--error"})),
    "chrt": _Wrapper(positional=1),
    "taskset": _Wrapper(positional=1),
    "chroot": _Wrapper(positional=1),
    "busybox": _Wrapper(),
    "flock": _Wrapper(
        "wE",
        frozenset({"--timeout", "--conflict-exit-code"}),
        "c",
        frozenset({"--command"}),
        positional=1,
    ),
    "runuser": _Wrapper(
        "ugGsw",
        frozenset({"--user", "--group", "--supp-group", "--shell", "--whitelist-environment"}),
        "c",
        frozenset({"--command"}),
    ),
    "su": _Wrapper(
        "sgGw",
        frozenset({"--shell", "--group", "--supp-group", "--whitelist-environment"}),
        "c",
        frozenset({"--command"}),
    ),
    "xargs": _Wrapper(
        "InPdLsEa",
        frozenset(
            {
                "--max-args",
                "--max-procs",
                "--delimiter",
                "--max-lines",
                "--max-chars",
                "--eof",
                "--arg-file",
                "--replace",
            }
        ),
    ),
}


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command of a shell string: its words (wrappers removed) and the
    directory it runs in, when the string says so (`cd /opt/dealix && ...`)."""

    words: list[str]
    cwd: str | None = None
    # a shell that reads its script from stdin (`bash -s`, `sh` with no script)
    reads_stdin: bool = False


def split_commands(text: str) -> list[list[str]]:
    """Split a shell string into simple commands (word lists), best effort.

    Wrappers are removed (sudo, env, nice, timeout, ...) and the scripts of
    `sh -c`, `bash -lc`, `su -c`, `eval`, `$(...)` and backquotes are split too.

    >>> split_commands("cd /x && rm -f a; echo 'b; c' | tee out")
    [['cd', '/x'], ['rm', '-f', 'a'], ['echo', 'b; c'], ['tee', 'out']]
    >>> split_commands("sudo -n -u app -- bash -lc 'cd /x && git push origin main'")
    [['bash', '-lc', 'cd /x && git push origin main'], ['cd', '/x'], ['git', 'push', 'origin', 'main']]
    """
    return [c.words for c in parse_commands(text)]


def parse_commands(text: str, cwd: str | None = None) -> list[SimpleCommand]:
    """The simple commands of a shell string, with their working directory when known."""
    out: list[SimpleCommand] = []
    _parse(text, cwd, 0, out)
    return out


def _tokens(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_PUNCT)
    lexer.whitespace_split = True
    lexer.whitespace = " \t\r"  # a newline separates commands, like ";"
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        # unbalanced quotes: fall back to whitespace words, still inspected
        return text.split()


def _is_separator(tok: str) -> bool:
    if tok in _SEPARATORS:
        return True
    if tok and all(c in _PUNCT for c in tok):
        # `>`, `>>`, `<`, `2>&1`'s `>&`, `&>`: redirections stay words (their
        # target is inspected); anything else made of `;&|()` separates commands
        return not (set(tok) <= set("<>") or tok in (">&", "<&", "&>", "&>>", ">|"))
    return False


def _parse(text: str, cwd: str | None, depth: int, out: list[SimpleCommand]) -> None:
    if depth > _MAX_DEPTH:
        # deeper nesting is not read; the outer words are still checked
        return
    commands: list[list[str]] = [[]]
    for tok in _tokens(text):
        if _is_separator(tok):
            commands.append([])
        else:
            commands[-1].append(tok)
    for raw in commands:
        if not raw:
            continue
        for word in raw:
            for inner in _substitutions(word):
                _parse(inner, cwd, depth + 1, out)
        words, scripts = _unwrap(raw)
        for script in scripts:
            _parse(script, cwd, depth + 1, out)
        if not words:
            continue
        prog = PurePosixPath(words[0]).name
        reads_stdin = False
        if prog in _SHELLS:
            shell_script, reads_stdin = _shell_script(words[1:])
            if shell_script is not None:
                out.append(SimpleCommand(words, cwd))
                _parse(shell_script, cwd, depth + 1, out)
                continue
        if prog in ("cd", "pushd"):
            args = [a for a in words[1:] if not a.startswith("-")]
            cwd = resolve(args[0], cwd) if args and not dynamic(args[0]) else None
        out.append(SimpleCommand(words, cwd, reads_stdin))


def _substitutions(word: str) -> list[str]:
    """The commands inside `$(...)` and backquotes of one word (quotes kept them whole)."""
    found: list[str] = []
    i = word.find("$(")
    while i >= 0:
        depth, j = 0, i + 1
        while j < len(word):
            if word[j] == "(":
                depth += 1
            elif word[j] == ")":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        found.append(word[i + 2 : j])
        i = word.find("$(", j)
    parts = word.split("`")
    found += parts[1::2]
    return [f for f in found if f.strip()]


def _value_option(word: str, name: str, spec: _Wrapper) -> tuple[bool, bool, str | None] | None:
    """The option in `word` that takes a value, or None when no option in it does.

    Returns (its value is a shell script, it is env's split string, the value
    when the word holds it: `--user=x`, `-ux`; None when it is the next word).
    In a group of letters the first one that takes a value takes the rest.

    >>> _value_option("--user=root", "sudo", _WRAPPERS["sudo"])
    (False, False, 'root')
    >>> _value_option("-nu", "sudo", _WRAPPERS["sudo"])
    (False, False, None)
    >>> _value_option("-iS", "env", _WRAPPERS["env"]), _value_option("-i", "env", _WRAPPERS["env"])
    ((False, True, None), None)
    """
    if word.startswith("--"):
        opt, eq, val = word.partition("=")
        if opt not in spec.long_value and opt not in spec.long_script:
            return None
        return (
            opt in spec.long_script,
            name == "env" and opt == "--split-string",
            val if eq else None,
        )
    for j, ch in enumerate(word[1:], start=1):
        if ch in spec.short_value or ch in spec.short_script:
            return ch in spec.short_script, name == "env" and ch == "S", word[j + 1 :] or None
    return None


def _unwrap(words: list[str]) -> tuple[list[str], list[str]]:
    """Skip wrappers (sudo, env, nice, timeout, ...) to the real command.

    Returns the command's words and the scripts the wrappers run (`su -c`,
    `env -S`, `eval`, `flock -c`), to be read as shell strings.

    >>> _unwrap(["sudo", "-n", "-u", "postgres", "--", "nice", "-n", "10", "rm", "x"])
    (['rm', 'x'], [])
    >>> _unwrap(["su", "-", "postgres", "-c", "dropdb dealix"])
    ([], ['dropdb dealix'])
    >>> _unwrap(["sudo", "-nupostgres", "rm", "x"]), _unwrap(["env", "-iS", "rm -r", "/srv"])
    ((['rm', 'x'], []), ([], ['rm -r /srv']))
    >>> _unwrap(["runuser", "--user=x", "--command=dropdb dealix"])
    ([], ['dropdb dealix'])
    >>> _unwrap(["env", "--split-string", "rm -r", "/srv"])
    ([], ['rm -r /srv'])
    """
    scripts: list[str] = []
    i, n = 0, len(words)
    for _ in range(64):
        while i < n and _ASSIGNMENT.match(words[i]):
            i += 1
        if i >= n:
            return [], scripts
        name = PurePosixPath(words[i]).name
        if name in _KEYWORDS:
            i += 1
            continue
        if name == "eval":
            scripts.append(" ".join(words[i + 1 :]))
            return [], scripts
        spec = _WRAPPERS.get(name)
        if spec is None:
            return words[i:], scripts
        rest = words[i + 1 :]
        if name == "su" or (
            name == "runuser"
            and not any(w in ("-u", "--user") or w.startswith("--user=") for w in rest)
        ):
            # su-style: every later word is an option or an argument of the user's shell
            scripts += _option_values(rest, spec, scripts_only=True)
            return [], scripts
        i += 1
        positional = spec.positional
        while i < n:
            w = words[i]
            if w == "--":
                i += 1
                break
            if w.startswith("-") and len(w) > 1:
                option = _value_option(w, name, spec)
                if option is not None:
                    script, split, val = option
                    if val is None:
                        val = words[i + 1] if i + 1 < n else ""
                        i += 1
                    if script:
                        scripts.append(val)
                    if split:
                        scripts.append(val + " " + shlex.join(words[i + 1 :]))
                        return [], scripts
                i += 1
                continue
            if name == "env" and _ASSIGNMENT.match(w):
                i += 1
                continue
            if positional > 0:
                positional -= 1
                i += 1
                continue
            break
    return words[i:], scripts


def _option_values(args: list[str], spec: _Wrapper, *, scripts_only: bool) -> list[str]:
    """The values of a wrapper's script options (`-c CMD`, `--command=CMD`) anywhere in args."""
    found: list[str] = []
    i = 0
    while i < len(args):
        w = args[i]
        if w.startswith("--"):
            opt, eq, val = w.partition("=")
            if (opt in spec.long_value or opt in spec.long_script) and not eq:
                val = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            if opt in spec.long_script:
                found.append(val)
        elif w.startswith("-") and len(w) > 1:
            for j, ch in enumerate(w[1:], start=1):
                if ch in spec.short_value or ch in spec.short_script:
                    val = w[j + 1 :]
                    if not val:
                        val = args[i + 1] if i + 1 < len(args) else ""
                        i += 1
                    if ch in spec.short_script:
                        found.append(val)
                    break
        i += 1
    return found


def _shell_script(args: list[str]) -> tuple[str | None, bool]:
    """(the `-c` script, reads its script from stdin) of a shell's arguments.

    >>> _shell_script(["-lc", "echo hi", "argv0"])
    ('echo hi', False)
    >>> _shell_script(["-s"])
    (None, True)
    """
    i, seen_c, seen_s = 0, False, False
    while i < len(args):
        w = args[i]
        if w == "--":
            i += 1
            break
        if w in ("--rcfile", "--init-file"):
            i += 2
            continue
        if w.startswith("--"):
            i += 1
            continue
        if w[:1] in ("-", "+") and len(w) > 1:
            letters = w[1:]
            seen_c = seen_c or (w[0] == "-" and "c" in letters)
            seen_s = seen_s or (w[0] == "-" and "s" in letters)
            # -o/-O take an option name
            i += 2 if letters[-1] in "oO" else 1
            continue
        break
    if seen_c:
        return (args[i] if i < len(args) else ""), False
    return None, seen_s or i >= len(args)


def dynamic(word: str) -> bool:
    return "$" in word or word.startswith("~") or "`" in word


def resolve(path: str, cwd: str | None) -> str | None:
    """An absolute, normalised path, or None when it depends on an unknown directory."""
    if dynamic(path):
        return None
    if path.startswith("/"):
        return posixpath.normpath(path)
    if cwd is None:
        return None
    return posixpath.normpath(posixpath.join(cwd, path))


def expand_braces(word: str) -> list[str]:
    """One level of brace expansion: `/a/{b,c}` -> `/a/b`, `/a/c`."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not m:
        return [word]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out += expand_braces(word[: m.start()] + alt + word[m.end() :])
    return out


def _component_match(a: str, b: str) -> bool:
    ga, gb = bool(GLOB.search(a)), bool(GLOB.search(b))
    if ga and gb:
        return True  # two patterns: assume they can meet
    if ga:
        return fnmatch.fnmatchcase(b, a)
    if gb:
        return fnmatch.fnmatchcase(a, b)
    return a == b


def may_reach(target: str, protected: str, *, tree: bool) -> bool:
    """Can an operation on `target` (a path or shell glob) hit `protected`?

    `tree`: the operation removes or moves a whole tree (`rm -r`, `mv`,
    `rsync --delete`), so an ancestor of `protected` reaches it too. Either
    side may be a glob (compared component by component, as the shell does).

    >>> may_reach("/opt/dealix", "/opt/dealix/.env.pre-v3.0.0.bak", tree=True)
    True
    >>> may_reach("/opt/dealix/.env.pre*", "/opt/dealix/.env.pre-v3.0.0.bak", tree=False)
    True
    >>> may_reach("/var/lib/postgresql/wal_archive", "/var/lib/postgresql/[0-9]*/*/pg_wal", tree=True)
    False
    """
    if not target.startswith("/") or not protected.startswith("/"):
        return False
    t = [c for c in target.split("/") if c]
    p = [c for c in protected.split("/") if c]
    if len(t) > len(p) or (len(t) < len(p) and not tree):
        return False
    return all(_component_match(a, b) for a, b in zip(t, p, strict=False))

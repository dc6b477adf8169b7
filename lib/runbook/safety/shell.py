"""The shell reader: what a shell string will run, read with a real bash parser.

The guards (runbook.safety.guards) judge the simple commands this module
finds. The text is parsed by tree-sitter-bash (the grammar editors and
GitHub use; it parses `case`, `[[ ]]`, arrays, arithmetic, heredocs and
`$'...'`, which bashlex cannot). Words are evaluated the way bash would as
far as they can be known from the text: quotes and escapes removed, ANSI-C
strings decoded, variables set earlier in the same command (`X=FILE; rm
"$X"`), exported or passed with `env K=V` (how the library sends `env=`)
substituted, the positional parameters of `sh -c SCRIPT _ ARG` bound, and
literal `for` lists unrolled. What cannot be known (an unset variable, a
command substitution's output, xargs' input) stays as its source text and
is listed in `unknown`; the guard decides whether that matters.

Wrappers are read through (sudo, env, nice, timeout, nohup, su -c, the
scripts of `sh -c` / `bash -lc`, literal `eval`, a script fed to a shell on
stdin by a heredoc, a here-string, `echo ... |` or the session's stdin), and
relative paths are resolved against a preceding `cd`.

Example::

    >>> [c.words for c in parse_commands("cd /opt/dealix && sudo -n rm -f .env")]
    [['cd', '/opt/dealix'], ['rm', '-f', '.env']]
    >>> parse_commands("cd /opt/dealix && rm -f .env")[1].cwd
    '/opt/dealix'
    >>> parse_commands('X=/srv/a; rm -f "$X"')[-1].words
    ['rm', '-f', '/srv/a']
    >>> parse_commands('rm -f "$Y"')[-1].unknown
    ('$Y',)
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import PurePosixPath
from typing import Any

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
GLOB = re.compile(r"[*?\[]")
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "rbash", "busybox"})
# interpreters whose inline program or stdin program the guard cannot read
INTERPRETER = re.compile(
    r"^(python[0-9.]*|pypy[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|lua[0-9.]*"
    r"|Rscript|tclsh[0-9.]*|wish|guile|julia|deno|bun|osascript|jshell|groovy|pwsh)$"
)
# a script nested deeper than this is not read: it is refused as opaque
_MAX_DEPTH = 8
# a literal `for` list longer than this is not unrolled (the body is read once, in a loop)
_MAX_UNROLL = 64
# what stands for xargs' (or parallel's) input in the words of the program it feeds
XARGS_INPUT = "<xargs input>"


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
    "unbuffer": _Wrapper(),
    "fakeroot": _Wrapper(),
    "watch": _Wrapper("nd", frozenset({"--interval"})),
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
    # xargs and parallel run a program on words read from stdin: the program is judged
    # with XARGS_INPUT (unknown) among its arguments
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
    "parallel": _Wrapper("jIS", frozenset({"--jobs", "--sshlogin", "--delimiter"})),
}


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command of a shell string, as far as the text tells.

    words: its words, wrappers removed, quotes and known variables resolved; a part
    that cannot be known stays as its source text (`$X`, `$(...)`) and is listed in
    `unknown`. cwd: the directory it runs in when the string says so. writes: the
    targets of its output redirections. stdin: what it reads on stdin when that is
    known from the text (a heredoc, a here-string, `echo ... |`, the session's stdin);
    None when it is not (a pipe from another program, `< file`). opaque: why the
    reader could not read it at all (an unreadable `eval`, a parse error); the guard
    refuses such a command. env: variables the command is started with.
    """

    words: list[str]
    cwd: str | None = None
    reads_stdin: bool = False
    writes: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    stdin: str | None = ""
    stdin_from_file: str | None = None
    in_loop: bool = False
    opaque: str | None = None
    env: tuple[tuple[str, str | None], ...] = ()
    # the programs earlier in the same string wrote to these paths (a script written
    # and then run is not readable by the guard)
    written_before: tuple[str, ...] = ()

    @property
    def prog(self) -> str:
        return PurePosixPath(self.words[0]).name if self.words else ""

    def env_value(self, name: str) -> str | None:
        for k, v in reversed(self.env):
            if k == name:
                return v
        return None

    def env_set(self, name: str) -> bool:
        return any(k == name for k, _ in self.env)


def split_commands(text: str) -> list[list[str]]:
    """Split a shell string into simple commands (word lists).

    Wrappers are removed (sudo, env, nice, timeout, ...) and the scripts of
    `sh -c`, `bash -lc`, `su -c`, `eval`, `$(...)` and backquotes are split too.

    >>> split_commands("cd /x && rm -f a; echo 'b; c' | tee out")
    [['cd', '/x'], ['rm', '-f', 'a'], ['echo', 'b; c'], ['tee', 'out']]
    >>> split_commands("sudo -n -u app -- bash -lc 'cd /x && git push origin main'")
    [['bash', '-lc', 'cd /x && git push origin main'], ['cd', '/x'], ['git', 'push', 'origin', 'main']]
    """
    return [c.words for c in parse_commands(text)]


def parse_commands(
    text: str,
    cwd: str | None = None,
    *,
    stdin: str | None = "",
    read: Callable[[str], bytes | None] | None = None,
) -> list[SimpleCommand]:
    """The simple commands of a shell string, with their working directory when known.

    `stdin`: what the string's first command reads (the session's stdin=; "" for none).
    `read`: a file on the server, for `source FILE` / `. FILE` (read and parsed in
    the current shell, so `set -a; . .env` sets what the file sets); without it,
    or when the file cannot be read, such a command is opaque.
    """
    reader = _Reader(read)
    reader.script(text, _Ctx(cwd=cwd, stdin=stdin), 0)
    return reader.out


# ---------------------------------------------------------------- the parser
@cache
def _parser() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


@dataclass
class _Ctx:
    """What the shell knows at a point of the script: variables, cwd, loop, stdin."""

    vars: dict[str, str | None] = field(default_factory=dict)
    exported: set[str] = field(default_factory=set)
    cwd: str | None = None
    in_loop: bool = False
    stdin: str | None = ""
    stdin_from_file: str | None = None

    def copy(self, **kw: Any) -> _Ctx:
        c = _Ctx(dict(self.vars), set(self.exported), self.cwd, self.in_loop, self.stdin)
        c.stdin_from_file = self.stdin_from_file
        for k, v in kw.items():
            setattr(c, k, v)
        return c


class _Word:
    """A word's value: its text, and the parts that could not be known."""

    __slots__ = ("glob", "text", "unknown")

    def __init__(self, text: str = "", unknown: list[str] | None = None, glob: bool = False):
        self.text = text
        self.unknown = unknown or []
        self.glob = glob

    def add(self, other: _Word) -> None:
        self.text += other.text
        self.unknown += other.unknown
        self.glob = self.glob or other.glob

    @property
    def known(self) -> bool:
        return not self.unknown


_STATEMENTS = {
    "program",
    "list",
    "compound_statement",
    "subshell",
    "do_group",
    "else_clause",
    "elif_clause",
    "case_item",
}


class _Reader:
    def __init__(self, read: Callable[[str], bytes | None] | None = None) -> None:
        self.out: list[SimpleCommand] = []
        self.written: list[str] = []
        self.read = read

    # ------------------------------------------------------------- scripts
    def script(self, text: str, ctx: _Ctx, depth: int) -> _Ctx:
        if depth > _MAX_DEPTH:
            self.opaque(text, ctx, f"scripts nested more than {_MAX_DEPTH} deep")
            return ctx
        tree = _parser().parse(text.encode())
        root = tree.root_node
        if root.has_error:
            bad = _first_error(root)
            where = bad.text.decode(errors="replace")[:60] if bad is not None else text[:60]
            self.opaque(text, ctx, f"the shell text does not parse (near {where!r})")
            # still read what did parse: a refusal names the rule when it can
        self.stmt(root, ctx, depth)
        return ctx

    def opaque(self, text: str, ctx: _Ctx, why: str) -> None:
        self.out.append(SimpleCommand([text], ctx.cwd, opaque=why, in_loop=ctx.in_loop))

    def stmt(self, node: Any, ctx: _Ctx, depth: int) -> None:
        t = node.type
        if t in ("comment", "heredoc_body", "heredoc_end", "heredoc_start"):
            return
        if not node.is_named:
            return
        if t in _STATEMENTS:
            inner = ctx.copy() if t == "subshell" else ctx
            for c in node.named_children:
                if t == "case_item" and node.field_name_for_child(_index(node, c)) == "value":
                    self.word(c, ctx, depth)
                    continue
                self.stmt(c, inner, depth)
            return
        if t == "command":
            self.command(node, ctx, depth, [])
            return
        if t == "redirected_statement":
            self.redirected(node, ctx, depth)
            return
        if t == "pipeline":
            self.pipeline(node.named_children, ctx, depth)
            return
        if t == "variable_assignment":
            self.assign(node, ctx, depth, export=False)
            return
        if t == "declaration_command":
            self.declare(node, ctx, depth)
            return
        if t == "unset_command":
            for c in node.named_children[1:] if node.named_children else []:
                ctx.vars.pop(c.text.decode(), None)
            return
        if t in ("for_statement", "select_statement"):
            self.for_loop(node, ctx, depth)
            return
        if t in ("while_statement", "until_statement", "c_style_for_statement"):
            loop = ctx.copy(in_loop=True)
            for c in node.named_children:
                self.stmt(c, loop, depth)
            # variables the loop sets are not known after it
            for k in loop.vars:
                if loop.vars[k] != ctx.vars.get(k):
                    ctx.vars[k] = None
            return
        if t == "function_definition":
            # a function may be called any number of times: its body is read as a loop
            body = node.child_by_field_name("body")
            if body is not None:
                self.stmt(body, ctx.copy(in_loop=True), depth)
            return
        if t == "case_statement":
            value = node.child_by_field_name("value")
            if value is not None:
                self.word(value, ctx, depth)
            for c in node.named_children:
                if c.type == "case_item":
                    self.stmt(c, ctx.copy(), depth)
            return
        if t in ("if_statement", "negated_command", "test_command"):
            for c in node.named_children:
                if c.type in ("test_command",) or t == "test_command":
                    self.word_tree(c, ctx, depth)
                else:
                    self.stmt(c, ctx, depth)
            return
        if t in ("ERROR",):
            return
        # anything else (coproc, arithmetic, words at statement level): read what it
        # holds as statements; the commands inside run too
        if node.type in _WORD_TYPES or not node.named_children:
            self.word_tree(node, ctx, depth)
            return
        for c in node.named_children:
            self.stmt(c, ctx, depth)

    def word_tree(self, node: Any, ctx: _Ctx, depth: int) -> None:
        """Read the command substitutions anywhere below a node (their commands run)."""
        if node.type in ("command_substitution", "process_substitution"):
            self.word(node, ctx, depth)
            return
        for c in node.named_children:
            self.word_tree(c, ctx, depth)

    def assign(self, node: Any, ctx: _Ctx, depth: int, *, export: bool) -> tuple[str, str | None]:
        name_node = node.child_by_field_name("name")
        name = name_node.text.decode() if name_node is not None else ""
        value = node.child_by_field_name("value")
        w = self.word(value, ctx, depth) if value is not None else _Word()
        if name_node is not None and name_node.type != "variable_name":
            # an array element or the like: the variable is no longer known
            name = name.split("[", 1)[0]
            ctx.vars[name] = None
            return name, None
        appending = any(not c.is_named and c.type == "+=" for c in node.children)
        val: str | None = w.text if w.known else None
        if appending:
            old = ctx.vars.get(name)
            val = old + val if (old is not None and val is not None) else None
        ctx.vars[name] = val
        if export:
            ctx.exported.add(name)
        return name, val

    def declare(self, node: Any, ctx: _Ctx, depth: int) -> None:
        kw = node.children[0].type if node.children else ""
        for c in node.named_children:
            if c.type == "variable_assignment":
                self.assign(c, ctx, depth, export=kw == "export")
            elif c.type == "variable_name":
                name = c.text.decode()
                if kw == "export":
                    ctx.exported.add(name)
                else:
                    ctx.vars.setdefault(name, None)
            else:
                w = self.word(c, ctx, depth)
                if w.text.startswith("-"):
                    continue
                if not w.known:
                    self.opaque(node.text.decode(), ctx, f"{kw} of an unknown word {w.unknown[0]}")

    def for_loop(self, node: Any, ctx: _Ctx, depth: int) -> None:
        var = node.child_by_field_name("variable")
        name = var.text.decode() if var is not None else ""
        values: list[_Word] = []
        known = True
        has_in = any(not c.is_named and c.type == "in" for c in node.children)
        for c in node.named_children:
            if node.field_name_for_child(_index(node, c)) == "value":
                w = self.word(c, ctx, depth)
                values.append(w)
                known = known and w.known
        body = node.child_by_field_name("body")
        if body is None:
            return
        if node.type == "for_statement" and has_in and known and len(values) <= _MAX_UNROLL:
            # a literal list: the body runs once per value, each read as it will run
            for w in values:
                one = ctx.copy()
                one.vars[name] = w.text
                self.stmt(body, one, depth)
            ctx.vars[name] = values[-1].text if values else ctx.vars.get(name)
            return
        loop = ctx.copy(in_loop=True)
        loop.vars[name] = None
        self.stmt(body, loop, depth)
        ctx.vars[name] = None

    # ------------------------------------------------------------- pipelines
    def pipeline(self, stages: list[Any], ctx: _Ctx, depth: int) -> None:
        feed: str | None = ctx.stdin
        feed_file = ctx.stdin_from_file
        for i, node in enumerate(stages):
            start = len(self.out)
            inner = ctx.copy(stdin=feed) if i else ctx.copy()
            inner.stdin_from_file = feed_file if i == 0 else None
            if node.type in ("command", "redirected_statement"):
                self.stmt(node, inner, depth)
            else:
                self.stmt(node, inner, depth)
            feed = self.output_of(self.out[start:])
            feed_file = None
        # a pipeline's commands run in subshells (bash without lastpipe): nothing they
        # set is known after it
        return

    def output_of(self, cmds: list[SimpleCommand]) -> str | None:
        """What a stage writes to the next one, when the text says so (echo/printf/cat)."""
        if len(cmds) != 1 or cmds[0].unknown or cmds[0].writes:
            return None
        c = cmds[0]
        if c.prog == "echo":
            args = c.words[1:]
            while args and re.fullmatch(r"-[neE]+", args[0]):
                if "e" in args[0]:
                    return None
                args = args[1:]
            return " ".join(args) + "\n"
        if c.prog == "printf" and len(c.words) == 2 and "%" not in c.words[1]:
            return decode_ansi_c(c.words[1])
        if c.prog == "cat" and len(c.words) == 1:
            return c.stdin
        return None

    def redirected(self, node: Any, ctx: _Ctx, depth: int) -> None:
        body = node.child_by_field_name("body")
        writes: list[str] = []
        unknown: list[str] = []
        stdin = ctx.stdin
        stdin_file = ctx.stdin_from_file
        after: list[Any] = []
        redirects = [c for c in node.named_children if c is not body]
        while redirects:
            r = redirects.pop(0)
            if r.type == "file_redirect":
                op = "".join(
                    c.type for c in r.children if not c.is_named and c.type not in ("(", ")")
                )
                dest = r.child_by_field_name("destination")
                w = self.word(dest, ctx, depth) if dest is not None else _Word()
                if ">" in op and "&" in op and w.text.isdigit():
                    continue  # 2>&1: a descriptor, not a file
                if ">" in op:
                    if w.known:
                        writes.append(w.text)
                        self.written.append(resolve(w.text, ctx.cwd) or w.text)
                    else:
                        unknown += w.unknown
                        writes.append(w.text)
                elif "<" in op:
                    stdin = None
                    stdin_file = w.text if w.known else None
            elif r.type == "herestring_redirect":
                w = _Word()
                for c in r.named_children:
                    w.add(self.word(c, ctx, depth))
                stdin = w.text + "\n" if w.known else None
                stdin_file = None
            elif r.type == "heredoc_redirect":
                stdin = self.heredoc(r, ctx, depth)
                stdin_file = None
                for c in r.named_children:
                    if c.type in ("file_redirect", "herestring_redirect"):
                        redirects.append(c)
                    elif c.type not in ("heredoc_start", "heredoc_body", "heredoc_end"):
                        after.append(c)
            else:
                self.word_tree(r, ctx, depth)
        if body is None:
            # `> FILE` alone truncates FILE
            self.out.append(
                SimpleCommand(
                    [":"],
                    ctx.cwd,
                    writes=tuple(writes),
                    unknown=tuple(unknown),
                    in_loop=ctx.in_loop,
                )
            )
            return
        inner = ctx.copy(stdin=stdin)
        inner.stdin_from_file = stdin_file
        start = len(self.out)
        if body.type == "command":
            self.command(body, inner, depth, writes, unknown)
        else:
            self.stmt(body, inner, depth)
            for i in range(start, len(self.out)):
                c = self.out[i]
                self.out[i] = replace(
                    c, writes=c.writes + tuple(writes), unknown=c.unknown + tuple(unknown)
                )
            if body.type not in ("subshell", "pipeline"):
                ctx.vars.update(inner.vars)
                ctx.cwd = inner.cwd
        # what the heredoc's line goes on with: `cat <<EOF | sh`, `cat <<EOF && rm x`
        feed = self.output_of(self.out[start:])
        for c in after:
            if c.type == "pipeline":
                self.pipeline_rest(c, ctx, depth, feed)
            else:
                self.stmt(c, ctx, depth)

    def pipeline_rest(self, node: Any, ctx: _Ctx, depth: int, feed: str | None) -> None:
        for stage in node.named_children:
            start = len(self.out)
            self.stmt(stage, ctx.copy(stdin=feed), depth)
            feed = self.output_of(self.out[start:])

    def heredoc(self, node: Any, ctx: _Ctx, depth: int) -> str | None:
        start = next((c for c in node.named_children if c.type == "heredoc_start"), None)
        body = next((c for c in node.named_children if c.type == "heredoc_body"), None)
        if body is None:
            return ""
        quoted = start is not None and any(q in start.text.decode() for q in "'\"\\")
        raw = body.text.decode()
        if quoted:
            return raw
        w = _Word()
        pos = body.start_byte
        src = body.text
        for c in body.named_children:
            if c.type == "heredoc_content":
                continue
            w.add(
                _Word(
                    _unescape_heredoc(
                        src[pos - body.start_byte : c.start_byte - body.start_byte].decode()
                    )
                )
            )
            w.add(self.word(c, ctx, depth))
            pos = c.end_byte
        w.add(_Word(_unescape_heredoc(src[pos - body.start_byte :].decode())))
        return w.text if w.known else None

    # ------------------------------------------------------------- commands
    def command(
        self,
        node: Any,
        ctx: _Ctx,
        depth: int,
        writes: list[str],
        unknown_writes: list[str] | None = None,
    ) -> None:
        prefix: list[tuple[str, str | None]] = []
        words: list[_Word] = []
        redir_writes = list(writes)
        unknown: list[str] = list(unknown_writes or [])
        stdin, stdin_file = ctx.stdin, ctx.stdin_from_file
        herestrings: list[Any] = []
        for c in node.named_children:
            field_name = node.field_name_for_child(_index(node, c))
            if c.type == "variable_assignment" and not words:
                scratch = ctx.copy()
                name, val = self.assign(c, scratch, depth, export=True)
                prefix.append((name, val))
            elif c.type == "command_name":
                for g in c.named_children:
                    words.append(self.word(g, ctx, depth))
            elif c.type == "herestring_redirect":
                herestrings.append(c)
            elif c.type == "file_redirect":
                w = self.word(c.child_by_field_name("destination"), ctx, depth)
                op = "".join(x.type for x in c.children if not x.is_named)
                if ">" in op and not ("&" in op and w.text.isdigit()):
                    redir_writes.append(w.text)
                    unknown += w.unknown
                    if w.known:
                        self.written.append(resolve(w.text, ctx.cwd) or w.text)
                elif "<" in op:
                    stdin, stdin_file = None, (w.text if w.known else None)
            elif field_name == "argument" or c.type in _WORD_TYPES:
                words.append(self.word(c, ctx, depth))
            else:
                self.word_tree(c, ctx, depth)
        for h in herestrings:
            w = _Word()
            for c in h.named_children:
                w.add(self.word(c, ctx, depth))
            stdin, stdin_file = (w.text + "\n" if w.known else None), None
        if not words:
            # plain assignments: they set shell variables
            for name, val in prefix:
                ctx.vars[name] = val
            return
        env = [(k, ctx.vars.get(k)) for k in sorted(ctx.exported)] + prefix
        inner = ctx.copy(stdin=stdin)
        inner.stdin_from_file = stdin_file
        self.simple(words, inner, depth, env, redir_writes, unknown)
        if words and words[0].text in ("cd", "pushd", "popd") and words[0].known:
            ctx.cwd = inner.cwd
        if words and words[0].text in ("source", ".") and words[0].known:
            # a sourced file runs in this shell: what it sets stays set
            ctx.vars.update(inner.vars)
            ctx.exported |= inner.exported
            ctx.cwd = inner.cwd

    def simple(
        self,
        words: list[_Word],
        ctx: _Ctx,
        depth: int,
        env: list[tuple[str, str | None]],
        writes: list[str],
        unknown: list[str],
    ) -> None:
        texts = [w.text for w in words]
        unknown_parts = [u for w in words for u in w.unknown]
        head = words[0]
        if not head.known:
            self.out.append(
                SimpleCommand(
                    texts,
                    ctx.cwd,
                    writes=tuple(writes),
                    unknown=tuple(unknown + unknown_parts),
                    stdin=ctx.stdin,
                    in_loop=ctx.in_loop,
                    opaque=f"the program to run is not known from the text ({head.unknown[0]})",
                    env=tuple(env),
                )
            )
            return
        # wrappers: sudo, env, nice, ... (their assignments are the command's environment)
        inner_words, scripts, wrapper_env, xargs = _unwrap(texts)
        env = env + wrapper_env
        offset = len(texts) - len(inner_words)
        kept_unknown = [u for w in words[offset:] for u in w.unknown]
        wrapper_unknown = [u for w in words[:offset] for u in w.unknown]
        if xargs:
            inner_words = [*inner_words, XARGS_INPUT]
            kept_unknown.append(XARGS_INPUT)
        nested_vars = {k: v for k, v in env}
        for script in scripts:
            if any(u for u in wrapper_unknown):
                self.opaque(script, ctx, f"a wrapper's script holds {wrapper_unknown[0]}")
                continue
            self.script(script, self.nested(ctx, nested_vars), depth + 1)
        if not inner_words:
            if writes:
                # `exec 3> FILE`: the redirection still opens (truncates) FILE
                self.out.append(
                    SimpleCommand(
                        [":"],
                        ctx.cwd,
                        writes=tuple(writes),
                        unknown=tuple(unknown + wrapper_unknown),
                        in_loop=ctx.in_loop,
                    )
                )
            return
        name = PurePosixPath(inner_words[0]).name
        cmd = SimpleCommand(
            inner_words,
            ctx.cwd,
            writes=tuple(writes),
            unknown=tuple(unknown + kept_unknown + wrapper_unknown),
            stdin=ctx.stdin,
            stdin_from_file=ctx.stdin_from_file,
            in_loop=ctx.in_loop,
            env=tuple(env),
            written_before=tuple(self.written),
        )
        if name == "eval":
            arg_words = words[offset + 1 :]
            if all(w.known for w in arg_words):
                self.out.append(cmd)
                self.script(" ".join(w.text for w in arg_words), ctx.copy(), depth + 1)
            else:
                self.out.append(
                    replace(cmd, opaque=f"eval of a word that is not known ({kept_unknown[0]})")
                )
            return
        if name in ("source", ".") or inner_words[0] == ".":
            target = inner_words[1] if len(inner_words) > 1 else ""
            full = resolve(target, ctx.cwd)
            data = (
                self.read(full)
                if self.read is not None and full and not cmd.unknown and full not in self.written
                else None
            )
            if data is not None:
                # sourced: runs in this shell, so what it sets stays set
                self.out.append(cmd)
                self.script(data.decode(errors="replace"), ctx, depth + 1)
                return
            self.out.append(
                replace(
                    cmd,
                    opaque=f"{name} runs a file the guard cannot read ({' '.join(inner_words[1:])})",
                )
            )
            return
        if name in SHELLS:
            args = inner_words[1:]
            if name == "busybox" and args and args[0] in SHELLS:
                args = args[1:]
            shell_text, reads_stdin, positional = _shell_script(args)
            if shell_text is not None and xargs:
                # the script is still read below (a rule it plainly breaks is named first)
                self.out.append(
                    replace(cmd, opaque="a shell script run by xargs on words it reads from stdin")
                )
            if shell_text is not None:
                self.out.append(cmd)
                rest = inner_words[1:]
                at = offset + 1 + rest.index(shell_text) if shell_text in rest else len(words)
                hidden = (
                    [XARGS_INPUT]
                    if shell_text == XARGS_INPUT
                    else (words[at].unknown if at < len(words) else [])
                )
                if hidden:
                    self.out.append(
                        replace(cmd, opaque=f"a shell script that is not known ({hidden[0]})")
                    )
                    return
                shell_text_vars = dict(nested_vars)
                for i, p in enumerate(positional):
                    shell_text_vars[str(i)] = (
                        p if p not in cmd.unknown and p != XARGS_INPUT else None
                    )
                for i in range(len(positional), 10):
                    shell_text_vars.setdefault(str(i), "")
                if xargs:
                    shell_text_vars.update({str(i): None for i in range(1, 10)})
                inner = self.nested(ctx, nested_vars)
                inner.vars.update(shell_text_vars)
                self.script(shell_text, inner, depth + 1)
                return
            if reads_stdin:
                cmd = replace(cmd, reads_stdin=True)
                self.out.append(cmd)
                if ctx.stdin is None:
                    what = (
                        f"the file {ctx.stdin_from_file}"
                        if ctx.stdin_from_file
                        else "another program's output"
                    )
                    self.out.append(replace(cmd, opaque=f"a shell reading its script from {what}"))
                elif ctx.stdin:
                    self.script(ctx.stdin, self.nested(ctx, nested_vars).copy(stdin=""), depth + 1)
                return
            self.out.append(cmd)
            return
        if name in ("cd", "pushd"):
            args = [a for a in inner_words[1:] if not a.startswith("-")]
            ctx.cwd = (
                resolve(args[0], ctx.cwd)
                if args and not kept_unknown and not args[0].startswith("~")
                else None
            )
            cmd = replace(cmd, cwd=ctx.cwd)
        elif name == "popd":
            ctx.cwd = None
        elif name in ("read", "mapfile", "readarray", "getopts"):
            for a in inner_words[1:]:
                if not a.startswith("-") and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a):
                    ctx.vars[a] = None
        self.out.append(cmd)

    @staticmethod
    def nested(ctx: _Ctx, env: dict[str, str | None]) -> _Ctx:
        """The context of a script a command runs: only the environment passes in; its
        stdin is the command's own."""
        inner = _Ctx(vars=dict(env), exported=set(env), cwd=ctx.cwd, stdin=ctx.stdin)
        inner.stdin_from_file = ctx.stdin_from_file
        inner.in_loop = ctx.in_loop
        return inner

    # ------------------------------------------------------------- words
    def word(self, node: Any, ctx: _Ctx, depth: int) -> _Word:
        if node is None:
            return _Word()
        t = node.type
        text = node.text.decode(errors="replace")
        if t == "word":
            return _Word(_unescape_word(text), glob=bool(GLOB.search(text)))
        if t in ("number", "regex", "extglob_pattern", "test_operator"):
            return _Word(text)
        if t == "raw_string":
            return _Word(text[1:-1])
        if t == "ansi_c_string":
            decoded = decode_ansi_c(text[2:-1])
            return _Word(decoded) if decoded is not None else _Word(text, [text])
        if t in ("string", "translated_string"):
            w = _Word()
            inner = node.named_children if t == "string" else node.named_children[0].named_children
            pos = node.start_byte + (2 if t == "translated_string" else 1)
            src = node.text
            base = node.start_byte
            for c in inner:
                gap = src[pos - base : c.start_byte - base].decode(errors="replace")
                if gap:
                    w.add(_Word(_unescape_dquote(gap)))
                if c.type == "string_content":
                    w.add(_Word(_unescape_dquote(c.text.decode(errors="replace"))))
                else:
                    w.add(self.word(c, ctx, depth))
                pos = c.end_byte
            tail = src[pos - base : len(src) - 1].decode(errors="replace")
            if tail:
                w.add(_Word(_unescape_dquote(tail)))
            return w
        if t == "concatenation":
            w = _Word()
            for c in node.children:
                w.add(self.word(c, ctx, depth) if c.is_named else _Word(c.text.decode()))
            return w
        if t == "simple_expansion":
            name = text[1:]
            val = ctx.vars.get(name)
            return _Word(val) if val is not None else _Word(text, [text])
        if t == "expansion":
            m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9])\}", text)
            if m and ctx.vars.get(m.group(1)) is not None:
                return _Word(ctx.vars[m.group(1)] or "")
            m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-=])(.*)\}", text, re.S)
            if m and ctx.vars.get(m.group(1)):
                return _Word(ctx.vars[m.group(1)] or "")
            self.word_tree(node, ctx, depth)
            return _Word(text, [text])
        if t in ("command_substitution", "process_substitution"):
            inner = ctx.copy(stdin="")
            for c in node.named_children:
                self.stmt(c, inner, depth + 1)
            return _Word(text, [text])
        if t == "arithmetic_expansion":
            self.word_tree(node, ctx, depth)
            return _Word(text, [text])
        if t == "brace_expression":
            return _Word(text)
        if t == "array":
            w = _Word()
            for c in node.named_children:
                w.add(self.word(c, ctx, depth))
            return _Word(text, w.unknown or [])
        if not node.is_named:
            return _Word(text)
        self.word_tree(node, ctx, depth)
        return _Word(text, [text])


_WORD_TYPES = {
    "word",
    "string",
    "raw_string",
    "ansi_c_string",
    "translated_string",
    "concatenation",
    "simple_expansion",
    "expansion",
    "command_substitution",
    "process_substitution",
    "arithmetic_expansion",
    "number",
    "brace_expression",
}


def _index(parent: Any, child: Any) -> int:
    for i, c in enumerate(parent.children):
        if c.id == child.id:
            return i
    return -1


def _first_error(node: Any) -> Any:
    if node.type == "ERROR" or node.is_missing:
        return node
    for c in node.children:
        if c.has_error or c.is_missing:
            found = _first_error(c)
            if found is not None:
                return found
    return None


def _unescape_word(text: str) -> str:
    text = text.replace("\\\n", "")
    return re.sub(r"\\(.)", r"\1", text, flags=re.S)


def _unescape_dquote(text: str) -> str:
    text = text.replace("\\\n", "")
    return re.sub(r'\\([$`"\\])', r"\1", text)


def _unescape_heredoc(text: str) -> str:
    text = text.replace("\\\n", "")
    return re.sub(r"\\([$`\\])", r"\1", text)


_ANSI = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def decode_ansi_c(body: str) -> str | None:
    r"""Decode the inside of bash's `$'...'` quoting; None for an escape it does not know.

    >>> decode_ansi_c(r"\x72m -f \057opt")
    'rm -f /opt'
    >>> decode_ansi_c(r"\u0072\cA") is None
    True
    """
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _ANSI:
            out.append(_ANSI[nxt])
            i += 2
            continue
        m = re.match(
            r"x([0-9A-Fa-f]{1,2})|([0-7]{1,3})|u([0-9A-Fa-f]{1,4})|U([0-9A-Fa-f]{1,8})",
            body[i + 1 :],
        )
        if m:
            if m.group(1):
                out.append(chr(int(m.group(1), 16)))
            elif m.group(2):
                out.append(chr(int(m.group(2), 8) & 0xFF))
            else:
                code = int(m.group(3) or m.group(4), 16)
                if code > 0x10FFFF:
                    return None
                out.append(chr(code))
            i += 1 + m.end()
            continue
        # \cX and anything unknown: not decoded (the guard treats the word as unknown)
        return None
    return "".join(out)


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


def _unwrap(words: list[str]) -> tuple[list[str], list[str], list[tuple[str, str | None]], bool]:
    """Skip wrappers (sudo, env, nice, timeout, xargs, ...) to the real command.

    Returns the command's words, the scripts the wrappers run (`su -c`,
    `env -S`, `flock -c`), to be read as shell strings, the variables the
    wrappers set (`env K=V`), and whether xargs/parallel feeds it words.

    >>> _unwrap(["sudo", "-n", "-u", "postgres", "--", "nice", "-n", "10", "rm", "x"])
    (['rm', 'x'], [], [], False)
    >>> _unwrap(["su", "-", "postgres", "-c", "dropdb dealix"])
    ([], ['dropdb dealix'], [], False)
    >>> _unwrap(["env", "PGDATABASE=dealix", "psql"])
    (['psql'], [], [('PGDATABASE', 'dealix')], False)
    >>> _unwrap(["xargs", "-0", "rm"])
    (['rm'], [], [], True)
    """
    scripts: list[str] = []
    env: list[tuple[str, str | None]] = []
    xargs = False
    i, n = 0, len(words)
    for _ in range(64):
        if i >= n:
            return [], scripts, env, xargs
        name = PurePosixPath(words[i]).name
        if name == "coproc":
            # `coproc CMD`, `coproc NAME { CMD; }` (which the grammar reads as words)
            i += 1
            if i + 1 < n and words[i + 1] in ("{", "("):
                i += 2
            elif i < n and words[i] in ("{", "("):
                i += 1
            continue
        spec = _WRAPPERS.get(name)
        if spec is None:
            return words[i:], scripts, env, xargs
        if name in ("xargs", "parallel"):
            xargs = True
        rest = words[i + 1 :]
        if name == "su" or (
            name == "runuser"
            and not any(w in ("-u", "--user") or w.startswith("--user=") for w in rest)
        ):
            # su-style: every later word is an option or an argument of the user's shell
            scripts += _option_values(rest, spec)
            return [], scripts, env, xargs
        if name == "env" and rest and rest[0] in ("-i", "--ignore-environment", "-"):
            env = []
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
                        return [], scripts, env, xargs
                i += 1
                continue
            if name == "env" and _ASSIGNMENT.match(w):
                k, _, v = w.partition("=")
                env.append((k, v))
                i += 1
                continue
            if positional > 0:
                positional -= 1
                i += 1
                continue
            break
    return words[i:], scripts, env, xargs


def _option_values(args: list[str], spec: _Wrapper) -> list[str]:
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


def _shell_script(args: list[str]) -> tuple[str | None, bool, list[str]]:
    """(the `-c` script, reads its script from stdin, $0 and the positional words).

    >>> _shell_script(["-lc", "echo hi", "argv0"])
    ('echo hi', False, ['argv0'])
    >>> _shell_script(["-s"])
    (None, True, [])
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
        return (args[i] if i < len(args) else ""), False, args[i + 1 :]
    return None, seen_s or i >= len(args), []


def dynamic(word: str) -> bool:
    return "$" in word or word.startswith("~") or "`" in word or word == XARGS_INPUT


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

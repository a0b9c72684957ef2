#!/usr/bin/env python3
"""Import cycles between the source files of a Rust crate.

Every file under SRC is a module; a file depends on another when it names an item of that
module by path (`use crate::a::b::C`, `crate::a::b::f()`, `super::x`, `self::y`, `child::z`,
including `{...}` groups). `mod` declarations and `pub use` re-exports are not dependencies (a
module that only declares and re-exports its children is their facade, not their user), and
neither are method calls (Rust resolves those through the type). Test-only files (`tests.rs`, `*_tests.rs`) are left out:
they sit below the module they test.

Prints every cycle (a strongly connected set of files) and exits 1 when there is one, else
prints the number of files and dependencies read and exits 0.

Usage: python3 scripts/module-cycles.py [SRC]   (default: src)
"""

import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    """The code of a file without comments, string and char literals, and inline test
    modules (test code; also, their `super` would name the file's own module)."""
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            i = n if i < 0 else i + 2
        elif re.match(r'b?r#*"', text[i:i + 12]):
            m = re.match(r'b?r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])(\w*\}?)?'", text[i:i + 12]):
            # A char literal such as '"' or '\''; lifetimes ('a) have no closing quote.
            m = re.match(r"'(\\.|[^\\'])(\w*\}?)?'", text[i:i + 12])
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(prefix, body):
    """Paths of a `use` tree body such as `a::{b, c::{d, e}}` joined to `prefix`."""
    out = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", part, flags=re.S)
        if m:
            head = [p for p in m.group(1).split("::") if p]
            out += expand(prefix + head, m.group(3))
        else:
            name = part.split(" as ")[0].strip()
            out.append(prefix + [p for p in name.split("::") if p])
    return out


def paths_in(text, module, files=()):
    """Absolute module paths named in one file."""
    found = []
    text = re.sub(r"\bpub(\([\w:]+\))?\s+use\s+[^;]+;", "", text)
    # A path that starts with a child module's name (`connect::Wait` in `client/mod.rs`).
    for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)+)", text):
        if tuple(module) + (m.group(1),) in files:
            found.append(list(module) + [m.group(1)] + [p for p in m.group(2).split("::") if p])
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        tree = m.group(1).strip()
        if tree.startswith("crate::"):
            found += expand([], tree[len("crate::"):])
        elif tree.startswith(("super::", "self::")):
            found += [resolve(module, p) for p in expand([], tree)]
    for m in re.finditer(r"\bcrate((?:::\w+)+)", text):
        found.append([p for p in m.group(1).split("::") if p])
    for m in re.finditer(r"(?<![\w:])((?:super::)+|self::)((?:\w+::)*\w+)", text):
        found.append(resolve(module, (m.group(1) + m.group(2)).split("::")))
    return found


def resolve(module, parts):
    base = list(module)
    rest = list(parts)
    if rest and rest[0] == "self":
        rest = rest[1:]
    while rest and rest[0] == "super":
        base = base[:-1]
        rest = rest[1:]
    return base + rest


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs") and n != "tests.rs" and not n.endswith("_tests.rs"):
                path = os.path.join(root, n)
                files[module_of(src, path)] = path
    deps = {m: set() for m in files}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        for parts in paths_in(text, module, files):
            # The longest prefix of the path that is a module file.
            for k in range(len(parts), 0, -1):
                target = tuple(parts[:k])
                if target in files:
                    if target != module:
                        deps[module].add(target)
                    break
    cycles = strongly_connected(deps)
    edges = sum(len(d) for d in deps.values())
    if not cycles:
        print(f"no import cycles among {len(files)} files ({edges} dependencies)")
        return 0
    for c in cycles:
        names = sorted("::".join(m) or "crate" for m in c)
        print("cycle: " + ", ".join(names))
        for m in sorted(c):
            for d in sorted(deps[m] & set(c)):
                print(f"  {'::'.join(m) or 'crate'} -> {'::'.join(d) or 'crate'}")
    return 1


def strongly_connected(deps):
    """Tarjan's algorithm; the components with more than one file."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in deps:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())

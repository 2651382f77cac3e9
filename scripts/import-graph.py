#!/usr/bin/env python3
"""The import graph of the library's modules, and its cycles.

    python3 scripts/import-graph.py            # cycles (strongly connected groups)
    python3 scripts/import-graph.py --edges    # every edge, file -> file
    python3 scripts/import-graph.py --allow hub,session,selection
                                               # exit 1 on any cycle beyond these

A module is a file under src/ (lib.rs is the module `lib`) (the binaries under src/bin/, main.rs and
cli.rs are left out: nothing imports them; so are unit-test modules). An
edge A -> B is any path in
A that names B: `use crate::b::..`, `crate::b::..` in code, `super::b`,
`use super::{b, c}`; a name used through a re-export (`crate::Hub`,
`crate::backend::Channel`) counts as an import of the file that defines it,
not of the module that re-exports it. Nested modules of one file (`mod tests`) count as the
file. The result: the strongly connected components of more than one file
(Tarjan), i.e. the import circles, largest first.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
SKIP = {"main.rs", "cli.rs"}


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def files():
    out = {}
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "bin" or str(rel) in SKIP:
            continue
        out[module_of(path)] = path
    return out


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def expand(path: str) -> list:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    path = path.strip()
    if "{" not in path:
        return [path] if path else []
    head, rest = path.split("{", 1)
    depth, items, current = 1, [], ""
    for char in rest:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                break
        if char == "," and depth == 1:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    out = []
    for item in items:
        for sub in expand(item.strip()):
            out.append(head + sub)
    return out


MODULES = set()


def references(module: tuple, text: str):
    """Absolute module paths (tuples) that `text`, in `module`, names."""
    text = strip_comments(text)
    # Unit tests (`#[cfg(test)] mod tests { .. }`, at the end of a file by
    # convention) are not part of the library's layers.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s", text)[0]
    paths = []
    # `use` items, braces included (possibly over several lines).
    for use in re.findall(r"\buse\s+([^;]+);", text, flags=re.S):
        paths.extend(expand(re.sub(r"\s+", "", use)))
    # Paths in code.
    paths.extend(re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text))
    # The file's own module for `super`: a file `a/b.rs` is module a::b,
    # whose parent is a; `mod.rs` files are their directory's module.
    for path in paths:
        parts = path.split("::")
        if parts[0] == "crate":
            yield tuple(parts[1:])
        elif parts[0] == "super":
            base = list(module)
            while parts and parts[0] == "super":
                base = base[:-1]
                parts = parts[1:]
            yield tuple(base + parts)
        elif parts[0] == "self":
            yield tuple(list(module) + parts[1:])
        elif tuple(list(module) + parts[:1]) in MODULES:
            # A path relative to this module (`use child::Item`).
            yield tuple(list(module) + parts)


def reexports(modules):
    """(module, name) -> the path it re-exports (`pub use a::b::Name;`)."""
    MODULES.update(modules)
    table = {}
    for module, path in modules.items():
        text = strip_comments(path.read_text())
        for use in re.findall(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]+);", text, flags=re.S):
            for item in expand(re.sub(r"\s+", "", use)):
                target, _, alias = item.partition(" as ")
                parts = target.split("::")
                name = alias or parts[-1]
                resolved = list(next(references(module, f"use {target};"), ()))
                if resolved:
                    table[(module, name)] = tuple(resolved)
    return table


def resolve(ref, modules, table, depth=0):
    """The file that defines what `ref` names: its longest module prefix,
    followed through re-exports (an item used through a `pub use` depends
    on where it is defined, not on the module that re-exports it)."""
    for cut in range(len(ref), -1, -1):
        target = ref[:cut]
        if target in modules:
            if cut < len(ref) and (target, ref[cut]) in table and depth < 10:
                return resolve(table[(target, ref[cut])] + ref[cut + 1 :], modules, table, depth + 1)
            return target
    return None


def graph():
    modules = files()
    table = reexports(modules)
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        for ref in references(module, path.read_text()):
            target = resolve(ref, modules, table)
            if target is not None and target != module and not is_ancestor(target, module):
                edges[module].add(target)
    return edges


def is_ancestor(a: tuple, b: tuple) -> bool:
    """A `mod.rs` declaring its children is not an import of them; a child
    naming its parent (`super::X`) is, unless the parent is the crate."""
    return len(a) < len(b) and b[: len(a)] == a and len(a) == 0


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return sorted(out, key=len, reverse=True)


def name(module: tuple) -> str:
    return "::".join(module) or "lib"


def main():
    edges = graph()
    if "--edges" in sys.argv:
        for module in sorted(edges):
            for target in sorted(edges[module]):
                print(f"{name(module)} -> {name(target)}")
        return 0
    allowed = set()
    if "--allow" in sys.argv:
        allowed = set(sys.argv[sys.argv.index("--allow") + 1].split(","))
    found = cycles(edges)
    bad = 0
    for group in found:
        names = [name(m) for m in group]
        ok = set(names) <= allowed
        bad += not ok
        print(f"{'allowed ' if ok else ''}cycle of {len(names)} files: {', '.join(names)}")
    if not found:
        print("no import cycle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

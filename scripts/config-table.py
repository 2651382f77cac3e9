#!/usr/bin/env python3
"""Prints the README's configuration table from `groupcast --help`.

    python3 scripts/config-table.py target/debug/groupcast > /tmp/table.md

The help text is the source of truth (clap builds it from src/cli.rs);
`tests/node/docs.rs` fails when a flag is missing from the README.
"""
import re
import subprocess
import sys

binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/groupcast"
text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
# Everything after "Options:"; section headings ("Security:") are lines at
# column 0 and end the option above them.
options = text.split("\nOptions:\n", 1)[1]
options = re.sub(r"^\S.*:$", "", options, flags=re.M)

rows = []
for block in re.split(r"\n(?= {2,8}(?:-\w, )?--)", "\n" + options):
    block = block.strip("\n")
    head = re.match(r"\s*(?:-\w, )?(--[\w-]+)(?: <[^>]+>|\s*\[<[^>]+>\])?", block)
    if not head or head.group(1) in ("--help", "--version"):
        continue
    flag = head.group(1)
    # Secrets are shown as `[env: NAME]` (their values hidden).
    env = re.search(r"\[env: (\w+)[=\]]", block)
    default = re.search(r"\[default: ([^\]]*)\]", block)
    values = re.findall(r"^\s+- (\w[\w-]*):", block, re.M)
    body = block[head.end():]
    body = re.sub(r"\[(env|default|possible values)[^\]]*\]", "", body)
    body = re.sub(r"Possible values:.*", "", body, flags=re.S)
    meaning = " ".join(body.split())
    if values:
        meaning += " (" + " / ".join(f"`{v}`" for v in values) + ")"
    rows.append((flag, env.group(1) if env else "", default.group(1) if default else "", meaning))

print("| flag | environment | default | meaning |")
print("| --- | --- | --- | --- |")
for flag, env, default, meaning in rows:
    env = f"`{env}`" if env else ""
    default = f"`{default}`" if default else ""
    meaning = meaning.replace("|", "\\|")
    print(f"| `{flag}` | {env} | {default} | {meaning} |")

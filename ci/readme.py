#!/usr/bin/env python3
"""Check that every sample output, status line and figure README.md shows is what the real thing gives.

Two kinds of tagged blocks in README.md (and any other markdown file given):

1. Output of a command. An HTML comment names the command; the fenced block right after it
   is that command's stdout, exactly (trailing spaces and the final newline aside):

       <!-- output: SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.11 python -m sglang_cp_symm doctor -->
       ```
       sglang-cp-symm 0.1.0 doctor
       ...
       ```

   Without a fence (a markdown table that should render), the block runs from the tag to `<!-- /output -->`.
   The command runs with bash in the repository root, with .venv/bin first on PATH and no
   SGLANG_* or NCCL_STUB_VERSION variable from the caller's environment (as the tests run).
   Add `2>&1` to show stderr, a pipe (`| sed -n 3,9p`, `| grep -v AMX`) to show an excerpt: the
   command written in the tag is the whole truth of what the block shows.

2. Lines quoted from a record. `<!-- quoted: docs/FILE -->` before a fenced block: every non-empty line
   of the block occurs, verbatim, in that file (a sample line from a GPU run, kept in its record).

3. Figures quoted from a record. Text between `<!-- figures: docs/FILE -->` and
   `<!-- /figures -->` (a table, a paragraph) may only contain numbers that occur in that file
   (figures measured on a GPU are never produced here; they are quoted from the committed record
   of the run, and a number that is not in the record is a drift).

    python3 ci/readme.py                 check every block; print a diff for each drift; exit 1 if any
    python3 ci/readme.py --update        rewrite the output blocks with what the commands print now
    python3 ci/readme.py --list          the tagged blocks, one a line
    python3 ci/readme.py --only doctor   only the blocks whose command contains "doctor"
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = re.compile(r"^<!-- output: (?P<command>.+?) -->\s*$")
OUTPUT_END = re.compile(r"^<!-- /output -->\s*$")
QUOTED = re.compile(r"^<!-- quoted: (?P<record>\S+) -->\s*$")
FIGURES = re.compile(r"^<!-- figures: (?P<record>\S+) -->\s*$")
FIGURES_END = re.compile(r"^<!-- /figures -->\s*$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)")
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[-\u2013]\d+(?:\.\d+)?)?(?![\w])")


@dataclass
class Block:
    kind: str  # "output", "quoted" or "figures"
    source: str  # the command, or the record's path
    line: int  # 1-based line of the tag
    start: int  # 0-based index of the first content line
    end: int  # 0-based index one past the last content line

    def text(self, lines):
        return "\n".join(lines[self.start:self.end])


def parse(path: Path) -> tuple:
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = OUTPUT.match(lines[i]) or QUOTED.match(lines[i])
        if m:
            kind = "output" if "command" in m.groupdict() else "quoted"
            j = i + 1
            fence = FENCE.match(lines[j]) if j < len(lines) else None
            if not fence and kind == "output":  # unfenced: up to <!-- /output --> (a markdown table, rendered)
                k = j
                while k < len(lines) and not OUTPUT_END.match(lines[k]):
                    k += 1
                if k == len(lines):
                    raise SystemExit(f"{path.name}:{i + 1}: an unfenced output block needs <!-- /output -->")
                blocks.append(Block(kind, m.group("command"), i + 1, j, k))
                i = k + 1
                continue
            if not fence:
                raise SystemExit(f"{path.name}:{i + 1}: a quoted tag must be followed by a fenced block")
            k = j + 1
            while k < len(lines) and not lines[k].startswith(fence.group("fence")):
                k += 1
            if k == len(lines):
                raise SystemExit(f"{path.name}:{j + 1}: the fenced block is not closed")
            blocks.append(Block(kind, m.group("command" if kind == "output" else "record"), i + 1, j + 1, k))
            i = k + 1
            continue
        m = FIGURES.match(lines[i])
        if m:
            k = i + 1
            while k < len(lines) and not FIGURES_END.match(lines[k]):
                k += 1
            if k == len(lines):
                raise SystemExit(f"{path.name}:{i + 1}: <!-- figures: ... --> without <!-- /figures -->")
            blocks.append(Block("figures", m.group("record"), i + 1, i + 1, k))
            i = k + 1
            continue
        i += 1
    return lines, blocks


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_") and k != "NCCL_STUB_VERSION"}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONWARNINGS"] = "ignore"
    env.setdefault("COLUMNS", "120")
    return env


def run(command: str, timeout: float) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=environment(), capture_output=True, text=True,
                            timeout=timeout)
    return result.stdout


def normal(text: str) -> list:
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


def check_figures(block: Block, lines) -> list:
    record = (ROOT / block.source)
    if not record.is_file():
        return [f"the record {block.source} does not exist"]
    known = set(NUMBER.findall(record.read_text().replace("\u2013", "-")))
    text = block.text(lines).replace("\u2013", "-")
    return [f"{n} is not in {block.source}" for n in NUMBER.findall(text) if n not in known]


def check_quoted(block: Block, lines) -> list:
    record = ROOT / block.source
    if not record.is_file():
        return [f"the record {block.source} does not exist"]
    text = record.read_text()
    return [f"not in {block.source}: {line[:120]}" for line in normal(block.text(lines)) if line and line not in text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=["README.md"])
    parser.add_argument("--update", action="store_true", help="rewrite output blocks with the real output")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--only", default=None, help="only blocks whose command or record contains this text")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    drifts = 0
    for name in args.files:
        path = ROOT / name
        lines, blocks = parse(path)
        if args.only:
            blocks = [b for b in blocks if args.only in b.source]
        if args.list:
            for b in blocks:
                print(f"{name}:{b.line}: {b.kind}: {b.source}")
            continue
        replacements = []
        for b in blocks:
            started = time.monotonic()
            if b.kind in ("figures", "quoted"):
                problems = check_figures(b, lines) if b.kind == "figures" else check_quoted(b, lines)
                status = "ok" if not problems else "DRIFT"
                print(f"[{status}] {name}:{b.line}: {b.kind} from {b.source}", flush=True)
                for p in problems:
                    print(f"    {p}")
                drifts += bool(problems)
                continue
            real = normal(run(b.source, args.timeout))
            shown = normal(b.text(lines))
            took = time.monotonic() - started
            if real == shown:
                print(f"[ok] {name}:{b.line}: {b.source} ({took:.0f} s)", flush=True)
                continue
            if args.update:
                replacements.append((b, real))
                print(f"[updated] {name}:{b.line}: {b.source} ({took:.0f} s)", flush=True)
                continue
            drifts += 1
            print(f"[DRIFT] {name}:{b.line}: {b.source} ({took:.0f} s)", flush=True)
            for line in difflib.unified_diff(shown, real, "README shows", "the command prints", lineterm="", n=1):
                print(f"    {line}")
        if replacements:
            for b, real in sorted(replacements, key=lambda r: -r[0].start):
                lines[b.start:b.end] = real
            path.write_text("\n".join(lines) + "\n")
    if drifts:
        print(f"{drifts} block(s) differ from what the real commands print and records hold; "
              "`python3 ci/readme.py --update` rewrites the output blocks")
    return 1 if drifts else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Check that every sample output, status line and figure README.md shows is what the real thing gives.

Three kinds of tagged blocks in README.md (and any other markdown file given):

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

3. Figures quoted from a record, checked by meaning. Text between `<!-- figures: docs/FILE -->` and
   `<!-- /figures -->` (a table, a paragraph). Figures measured on a GPU are never produced here: they are
   quoted from the committed record of the run, each with the name of the value it shows. Every line of the
   block that shows a number carries `<!-- keys: KEY KEY ... -->` at its end (in a table row, inside its last
   cell, where it renders as nothing), one key per figure in the order the line shows them; each figure must
   equal that key's value in the record, so a figure moved to another row, swapped with another or changed
   is a drift, and so is a number with no key. A figure is a number, a version, a duration (23m17s) or a
   clock time (17:37) outside code spans; a key whose value holds several ("2.40, 2.57 ms", "53-61 us")
   stands for that many, in order.

   A record's labelled values (`python3 ci/readme.py --keys docs/FILE` lists them):
   - every ```json block the benchmark wrote, flattened: {"startup": {"switch unset": {"added_ms": 0.19}}}
     is `startup.switch_unset.added_ms` (names lowercased, every run of other characters made one `_`);
   - every ```figures block: `key = value` lines, under the section (`## ...`) of the run that measured them
     (or before the first section, for a record of one run); each value must occur verbatim in that
     section's own text (its output, its tables) or the record's preamble (the text before the first
     section), so a labelled value cannot say what the run did not print.

    python3 ci/readme.py                 check every block; print a diff for each drift; exit 1 if any
    python3 ci/readme.py --update        rewrite the output blocks with what the commands print now
    python3 ci/readme.py --list          the tagged blocks, one a line
    python3 ci/readme.py --only doctor   only the blocks whose command contains "doctor"
    python3 ci/readme.py --records       only the figures and quoted blocks (no command runs)
    python3 ci/readme.py --keys docs/F   the labelled values of a record, one a line
"""

from __future__ import annotations

import argparse
import difflib
import json
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
# A figure as README shows it: a duration (23m17s), a clock time (17:37), a version (0.5.11), a number (12.5);
# not part of a name (H100, sm90, x86_64), a path or a reference (#22914). A sign before it is not part of it.
TOKEN = re.compile(r"(?<![\w.#/:])(\d+m\d+s|\d+:\d\d(?::\d\d)?|\d+(?:\.\d+)+|\d+)(?!\d)")
PLAIN = re.compile(r"\d+(?:\.\d+)?")
KEYS = re.compile(r"<!--\s*keys:(?P<keys>.*?)-->")
COMMENT = re.compile(r"<!--.*?-->", re.S)
CODE = re.compile(r"(`+)(.+?)\1", re.S)
SECTION = re.compile(r"^##\s")
KEY = re.compile(r"^[a-z0-9_]+(?:\.[a-z0-9_]+)*$")
LABELLED = re.compile(r"^(?P<key>\S+)\s*=\s*(?P<value>.*?)\s*$")


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


def slug(name) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def flatten(value, prefix: str, out: dict) -> None:
    """A JSON value's numbers and strings under dotted keys (booleans and nulls are no figures)."""
    if isinstance(value, dict):
        for name, item in value.items():
            flatten(item, f"{prefix}.{slug(name)}" if prefix else slug(name), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            flatten(item, f"{prefix}.{i}", out)
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        out[prefix] = str(value)


def occurs(value: str, text: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(value) + r"(?!\.?\d)", text) is not None


def labelled(record: Path) -> tuple:
    """The record's labelled values {key: value} and the problems found reading them (see the module's doc)."""
    lines = record.read_text().splitlines()
    values, problems = {}, []
    preamble, sections = [], []  # sections: [own text lines, [(line number, key, value)]]
    loose = []  # figures lines before the first section: checked against the preamble
    fence = None
    info = ""
    body = []
    for number, line in enumerate(lines, 1):
        if fence is None:
            m = FENCE.match(line)
            if m:
                fence, info, body, opened = m.group("fence"), line[len(m.group("fence")):].strip(), [], number
                if info != "figures":
                    (sections[-1][0] if sections else preamble).append(line)
                continue
            if SECTION.match(line):
                sections.append([[line], []])
                continue
            (sections[-1][0] if sections else preamble).append(line)
            continue
        if line.startswith(fence):
            if info == "json":
                try:
                    found = {}
                    flatten(json.loads("\n".join(body)), "", found)
                except ValueError as e:
                    problems.append(f"line {opened}: the json block is not JSON ({str(e)[:60]})")
                    found = {}
                for key, value in found.items():
                    if key in values:
                        problems.append(f"line {opened}: {key} is named twice")
                    values[key] = value
            if info != "figures":
                (sections[-1][0] if sections else preamble).append(line)
            fence = None
            continue
        body.append(line)
        if info == "figures":
            if line.strip() and not line.lstrip().startswith("#"):
                m = LABELLED.match(line.strip())
                if not m or not KEY.match(m.group("key")) or not TOKEN.search(m.group("value")):
                    problems.append(f"line {number}: not `key = value with a number` (key: a-z 0-9 _ and dots): "
                                    f"{line.strip()[:60]}")
                elif m.group("key") in values:
                    problems.append(f"line {number}: {m.group('key')} is named twice")
                else:
                    values[m.group("key")] = m.group("value")
                    (sections[-1][1] if sections else loose).append((number, m.group("key"), m.group("value")))
        else:
            (sections[-1][0] if sections else preamble).append(line)
    if fence is not None:
        problems.append("a fenced block is not closed")
    shared = "\n".join(preamble)
    for own, entries in [[[], loose]] + sections:
        text = "\n".join(own) + "\n" + shared
        for number, key, value in entries:
            if not occurs(value, text):
                problems.append(f"line {number}: {key} = {value[:40]}: the value is not in its section's output, "
                                "tables or text")
    return values, problems


def row_label(line: str) -> str:
    text = COMMENT.sub("", line).strip()
    if text.startswith("|"):
        text = text.strip("|").split("|")[0].strip()
    return text[:50]


def same(shown: str, recorded: str) -> bool:
    if PLAIN.fullmatch(shown) and PLAIN.fullmatch(recorded):
        return float(shown) == float(recorded)
    return shown == recorded


def check_figures(block: Block, lines, name: str = "README.md") -> list:
    record = ROOT / block.source
    if not record.is_file():
        return [f"the record {block.source} does not exist"]
    values, problems = labelled(record)
    problems = [f"{block.source}: {p}" for p in problems]
    raw = lines[block.start:block.end]
    text = COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), "\n".join(raw))
    visible = CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text).split("\n")
    for offset, (line, seen) in enumerate(zip(raw, visible)):
        where = f"{name}:{block.start + offset + 1} (row \"{row_label(line)}\")"
        keys = [k for m in KEYS.finditer(line) for k in m.group("keys").split()]
        shown = TOKEN.findall(seen)
        if not shown and not keys:
            continue
        if not keys:
            problems.append(f"{where}: shows {', '.join(shown)[:60]} but names no key (end the line with "
                            "<!-- keys: KEY ... -->)")
            continue
        missing = [k for k in keys if k not in values]
        if missing:
            problems.append(f"{where}: no value named {', '.join(missing)} in {block.source} "
                            f"(`python3 ci/readme.py --keys {block.source}` lists them)")
            continue
        expected = [(k, t) for k in keys for t in TOKEN.findall(values[k])]
        if len(expected) != len(shown):
            problems.append(f"{where}: shows {len(shown)} figure(s) ({', '.join(shown)[:60]}) but its keys name "
                            f"{len(expected)} ({', '.join(t for _, t in expected)[:60]})")
            continue
        for figure, (key, value) in zip(shown, expected):
            if not same(figure, value):
                problems.append(f"{where}: shows {figure} where {block.source} has {key} = {values[key][:40]}")
    return problems


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
    parser.add_argument("--records", action="store_true", help="only the figures and quoted blocks (no command)")
    parser.add_argument("--keys", metavar="RECORD", default=None, help="list a record's labelled values")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.keys:
        record = ROOT / args.keys
        if not record.is_file():
            print(f"no record {args.keys[:80]}: name a file under docs/, e.g. docs/overhead.md")
            return 1
        values, problems = labelled(record)
        for key, value in values.items():
            print(f"{key} = {value}")
        for p in problems:
            print(f"PROBLEM {args.keys}: {p}")
        return 1 if problems else 0
    drifts = 0
    for name in args.files:
        path = ROOT / name
        lines, blocks = parse(path)
        if args.only:
            blocks = [b for b in blocks if args.only in b.source]
        if args.records:
            blocks = [b for b in blocks if b.kind in ("figures", "quoted")]
        if args.list:
            for b in blocks:
                print(f"{name}:{b.line}: {b.kind}: {b.source}")
            continue
        replacements = []
        for b in blocks:
            started = time.monotonic()
            if b.kind in ("figures", "quoted"):
                problems = check_figures(b, lines, name) if b.kind == "figures" else check_quoted(b, lines)
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
              "`python3 ci/readme.py --update` rewrites the output blocks (a figure is corrected by hand, "
              "from the record: `python3 ci/readme.py --keys docs/FILE`)")
    return 1 if drifts else 0


if __name__ == "__main__":
    sys.exit(main())

"""Audit published NCCL binaries for what the plugin's policy rests on, without a GPU.

Why: NCCL 2.31 and 2.32 ship without a source tag, and the policy table
(``sglang_cp_symm/engine/nccl_policy.py``) may only lift "unverified" from a line on
evidence. This command reads that evidence from the very wheel a user installs
(``nvidia-nccl-cu13==V``) and writes it down, so a new NCCL gets its row from one run:

    python -m maint.nccl_audit --nccl-repo /path/to/nccl.git 2.28.9 2.29.7 2.30.7 2.31.2 2.32.6

For each version it reports

(a) the race fix in every symmetric kernel: the sm_90 machine code of each
    ``ncclSymkDevKernel_*`` (``cuobjdump -xelf`` then ``nvdisasm``), where
    ``cudaGridDependencySynchronize()`` compiles to ``ACQBULK``; kernels with and without it;
(b) the registration rule of AllGather's symmetric kernels (receive alone or both), read
    in NCCL's source at the release tag, or, for a release without a tag, on the ``dev``
    branch (said as such) next to what the binary's strings show; the rule itself is
    never read from the host machine code, and the record says so;
(c) ``NCCL_ALGO``'s effect on symmetric kernels, read the same way;
(d) the ``NCCL_SYM_*`` / ``NCCL_WIN_*`` / ``NCCL_SYMK_*`` names in ``libnccl.so.2``'s
    strings and in the wheel's ``nccl.h``, and which are new against the previous
    version audited.

Downloads (about 200 MB a wheel, plus ``nvidia-cuda-cuobjdump`` and ``nvidia-cuda-nvdisasm``
13.x) go through pip into ``.cache/nccl-audit/`` and are reused. Records already in
``docs/nccl-audit.json`` are kept and the markdown is rendered from all of them. A
maintainer command, run on demand: never a step of every CI run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "nccl-audit"
OUT_MD = ROOT / "docs" / "nccl-audit.md"
OUT_JSON = ROOT / "docs" / "nccl-audit.json"
WHEEL = "nvidia-nccl-cu13"
TOOLS = ("nvidia-cuda-cuobjdump", "nvidia-cuda-nvdisasm")
TOOLS_SPEC = ">=13,<14"
KERNEL_PREFIX = "ncclSymkDevKernel_"
FENCE = "ACQBULK"  # what cudaGridDependencySynchronize() compiles to on sm_90
ARCH = "sm_90"

PARAMETER_NAME = re.compile(rb"NCCL_(?:SYMK|SYM|WIN)_[A-Z0-9_]*[A-Z0-9]")
HEADER_DEFINE = re.compile(r"^\s*#\s*define\s+(NCCL_(?:SYMK|SYM|WIN)_[A-Z0-9_]*[A-Z0-9])\b", re.M)
SECTION = re.compile(r"^\s*\.section\s+([^,\s]+)", re.M)

#: strings of the binary that show which host code it carries (each with where it is in NCCL's source)
FINGERPRINTS = {
    "unified tuning parses NCCL_SYM_KERNEL with NCCL_ALGO":
        (b"NCCL_SYM_KERNEL set by environment to %s", "dev src/tuning/cost_model.cc:330"),
    "symmetric model compiled in (tuning/sym_model.cc)": (b"sym_model.cc", "dev src/tuning/sym_model.cc"),
}

#: (b) AllGather's registration rule, as the source writes it at each line of releases
RULES = (
    ("receive alone or both",
     re.compile(r"ncclFuncAllGather\s*(?:\)\s*\{|&&)\s*(?:if\s*\(\s*)?(?:inputs->)?winRegType\s*!=\s*"
                r"ncclSymSendRegRecvReg\s*&&\s*(?:inputs->)?winRegType\s*!=\s*ncclSymSendNonregRecvReg"),
     "AllGather's non-LL symmetric kernels stay selectable when the receive buffer is in a window (receive alone "
     "or both); send alone or neither leaves only the LL kernels"),
    ("both",
     re.compile(r"task->sendWin\s*&&\s*task->recvWin\s*&&\s*\(task->sendWin->winFlags\s*&\s*"
                r"task->recvWin->winFlags\s*&\s*NCCL_WIN_COLL_SYMMETRIC\)"),
     "a symmetric kernel only when send and receive buffers both lie in NCCL_WIN_COLL_SYMMETRIC windows"),
)
RULE_FILES = ("src/sym_kernels.cc", "src/tuning/sym_model.cc", "src/scheduler/symmetric_sched.cc")

#: (c) NCCL_ALGO: the 2.31 form zeroes every symmetric kernel once NCCL_ALGO or NCCL_SYM_KERNEL is non-empty
ALGO_OFF = re.compile(r"if\s*\(\(algoStr\s*&&\s*strlen\(algoStr\)\s*>\s*0\)[^\n]*\n[^\n]*fill_n\(algoEnable[^\n]*\n"
                      r"[^\n]*fill_n\(symKernelIdEnable")
ALGO_FORCED = re.compile(r"if\s*\(comm->tuningContext\.forced\[f\]\s*==\s*0[\s\S]*?symKernelIdEnable\[[^\]]*\]\s*"
                         r"!=\s*0\)\)\s*\{")


class AuditError(Exception):
    """One line saying what went wrong and what to do."""


# --- parsing (pure: tested on fixtures in tests/maint) -------------------------------------------------------------

def kernel_name(symbol: str) -> str:
    """``_Z30ncclSymkDevKernel_AllGather_ST21ncclSymkDevWorkArgs4K`` -> ``ncclSymkDevKernel_AllGather_ST``."""
    m = re.match(r"_Z(\d+)", symbol)
    if m:
        n = int(m.group(1))
        return symbol[m.end():m.end() + n]
    return symbol


def symmetric_kernels(sass: str) -> Dict[str, bool]:
    """{mangled symbol of each ``ncclSymkDevKernel_*`` code section: whether its code holds ``ACQBULK``}."""
    found: Dict[str, bool] = {}
    marks = list(SECTION.finditer(sass))
    for i, m in enumerate(marks):
        name = m.group(1)
        if not name.startswith(".text.") or KERNEL_PREFIX not in name:
            continue
        end = marks[i + 1].start() if i + 1 < len(marks) else len(sass)
        symbol = name[len(".text."):]
        body = sass[m.end():end]
        has = re.search(r"\b" + FENCE + r"\b", body) is not None
        found[symbol] = found.get(symbol, True) and has if symbol in found else has
    return found


def kernel_families(names: Iterable[str]) -> List[str]:
    """Kernel names without the prefix, the reduction/type suffix and ``_profile``: one entry per algorithm."""
    families = set()
    for name in names:
        name = name[len(KERNEL_PREFIX):] if name.startswith(KERNEL_PREFIX) else name
        name = re.sub(r"_profile$", "", name)
        families.add(re.sub(r"_(?:sum|prod|min|max|avg|premulsum|sumpostdiv)_[a-z0-9]+$", "", name))
    return sorted(families)


def parameter_names(blob: bytes) -> List[str]:
    """The ``NCCL_SYM_*``, ``NCCL_SYMK_*`` and ``NCCL_WIN_*`` names in a binary's bytes."""
    return sorted({m.group(0).decode() for m in PARAMETER_NAME.finditer(blob)})


def header_names(text: str) -> List[str]:
    """The ``NCCL_SYM*``/``NCCL_WIN_*`` macros ``nccl.h`` defines (window flags and the like)."""
    return sorted(set(HEADER_DEFINE.findall(text)))


def fingerprints(blob: bytes) -> Dict[str, bool]:
    return {label: needle in blob for label, (needle, _) in FINGERPRINTS.items()}


def line_span(text: str, start: int, end: int) -> str:
    first = text.count("\n", 0, start) + 1
    last = text.count("\n", 0, max(start, end - 1)) + 1
    return f"{first}" if first == last else f"{first}-{last}"


def registration_rule(files: Dict[str, str]) -> Optional[Tuple[str, str, str]]:
    """(rule, ``path:lines``, what it means) found in the given source files, or None."""
    for rule, pattern, meaning in RULES:
        for path in RULE_FILES:
            text = files.get(path)
            m = pattern.search(text) if text else None
            if m:
                return rule, f"{path}:{line_span(text, m.start(), m.end())}", meaning
    return None


def algo_rule(cost_model: Optional[str]) -> Optional[Tuple[str, str]]:
    """(``path:lines`` of the zeroing, ``path:lines`` of the per-function re-enable) in ``src/tuning/cost_model.cc``."""
    if not cost_model:
        return None
    off, forced = ALGO_OFF.search(cost_model), ALGO_FORCED.search(cost_model)
    if not (off and forced):
        return None
    path = "src/tuning/cost_model.cc"
    return (f"{path}:{line_span(cost_model, off.start(), off.end())}",
            f"{path}:{line_span(cost_model, forced.start(), forced.end())}")


def version_key(version: str) -> Tuple[int, ...]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise AuditError(f"not an NCCL version: {version[:20]!r} (expected e.g. 2.32.6)")
    return tuple(int(p) for p in parts)


def new_names(records: Sequence[dict]) -> None:
    """Fill each record's ``new_*`` lists against the record before it (records sorted by version)."""
    previous = None
    for record in records:
        for key in ("parameters", "header_names"):
            record[f"new_{key}"] = (None if previous is None
                                    else sorted(set(record[key]) - set(previous[key])))
            record[f"gone_{key}"] = (None if previous is None
                                     else sorted(set(previous[key]) - set(record[key])))
        record["compared_with"] = previous["version"] if previous else None
        previous = record


# --- the real thing: pip, cuobjdump, nvdisasm, git ----------------------------------------------------------------

def run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), check=True, capture_output=True, **kw)
    except FileNotFoundError:
        raise AuditError(f"{cmd[0]} not found") from None
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["(no message)"]
        raise AuditError(f"{' '.join(cmd[:4])} ... failed: {tail[0][:200]}") from None


def download(requirement: str, into: Path) -> Path:
    """The one wheel of ``requirement`` in ``into``, fetched with pip (--no-deps) unless already there."""
    into.mkdir(parents=True, exist_ok=True)
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(into),
             requirement])
        wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise AuditError(f"expected one wheel in {into}, found {len(wheels)}: remove the folder and run again")
    return wheels[0]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract(wheel: Path, suffixes: Iterable[str], into: Path) -> Dict[str, Path]:
    """Members of ``wheel`` whose names end with one of ``suffixes``, extracted once into ``into``."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            for suffix in suffixes:
                if name.endswith(suffix):
                    target = into / name
                    if not target.exists():
                        z.extract(name, into)
                    out[suffix] = target
    missing = [s for s in suffixes if s not in out]
    if missing:
        raise AuditError(f"{wheel.name} holds no {', '.join(missing)}")
    return out


def tools(cache: Path) -> Tuple[Path, Path, List[str]]:
    paths, names = [], []
    for dist, exe in zip(TOOLS, ("bin/cuobjdump", "bin/nvdisasm")):
        wheel = download(dist + TOOLS_SPEC, cache / "tools" / dist)
        path = extract(wheel, [exe], cache / "tools" / "extracted")[exe]
        path.chmod(0o755)
        paths.append(path)
        names.append(wheel.name)
    return paths[0], paths[1], names


def audit_sass(lib: Path, work: Path, cuobjdump: Path, nvdisasm: Path) -> Dict[str, bool]:
    work.mkdir(parents=True, exist_ok=True)
    if not any(work.glob(f"*.{ARCH}.cubin")):
        run([str(cuobjdump), "-xelf", "all", str(lib.resolve())], cwd=work)
    kernels: Dict[str, bool] = {}
    for cubin in sorted(work.glob(f"*.{ARCH}.cubin")):
        if KERNEL_PREFIX.encode() not in cubin.read_bytes():
            continue
        sass = run([str(nvdisasm), str(cubin)]).stdout.decode(errors="replace")
        for symbol, has in symmetric_kernels(sass).items():
            kernels[symbol] = kernels.get(symbol, True) and has
    for stale in work.glob("*.cubin"):
        stale.unlink()  # several hundred MB a version: the SASS verdict is what we keep
    return kernels


def git(repo: Path, *args: str) -> str:
    return run(["git", "-C", str(repo), *args]).stdout.decode(errors="replace")


def source_ref(repo: Path, version: str) -> Tuple[str, str, str]:
    """(ref, commit, what it is): the release tag if NCCL's repository has one, else its ``dev`` branch."""
    tag = f"v{version}-1"
    if git(repo, "tag", "-l", tag).strip():
        return tag, git(repo, "rev-parse", f"{tag}^{{commit}}").strip(), f"release tag {tag}"
    mk = git(repo, "show", "dev:makefiles/version.mk")
    fields = dict(re.findall(r"^NCCL_(MAJOR|MINOR|PATCH|SUFFIX)\s*:=\s*(\S*)", mk, re.M))
    dev_version = f"{fields.get('MAJOR')}.{fields.get('MINOR')}.{fields.get('PATCH')}{fields.get('SUFFIX', '')}"
    return "dev", git(repo, "rev-parse", "dev").strip(), (
        f"no tag {tag} in NCCL's repository: branch dev ({dev_version}), the nearest source, not this release")


def read_source(repo: Path, ref: str, path: str) -> Optional[str]:
    try:
        return git(repo, "show", f"{ref}:{path}")
    except AuditError:
        return None


def algo_reads(repo: Path, ref: str) -> List[str]:
    """``path:line`` of every place the source at ``ref`` reads ``NCCL_ALGO`` by name."""
    try:
        hits = git(repo, "grep", "-n", '"NCCL_ALGO"', ref, "--", "src")
    except AuditError:  # git grep exits 1 when nothing matches
        return []
    return [f"{m.group(1)}:{m.group(2)}" for m in re.finditer(r"^[^:]+:([^:]+):(\d+):", hits, re.M)]


def source_facts(repo: Optional[Path], version: str) -> dict:
    if repo is None:
        return {"ref": None, "what": "no NCCL repository given (--nccl-repo): source not read",
                "rule": None, "algo": None, "generate_py_sync_calls": None}
    ref, commit, what = source_ref(repo, version)
    files = {p: read_source(repo, ref, p) for p in RULE_FILES}
    rule = registration_rule(files)
    cost_model = read_source(repo, ref, "src/tuning/cost_model.cc")
    algo = algo_rule(cost_model)
    if algo:
        algo_fact = {"symmetric_off": True, "where": list(algo),
                     "text": "any non-empty NCCL_ALGO (or NCCL_SYM_KERNEL) zeroes every symmetric kernel's enable; "
                             "for each function the value covers (no prefix, or that function's prefix) only the "
                             "algorithms it lists and the symmetric kernels NCCL_SYM_KERNEL names stay enabled"}
    else:
        reads = algo_reads(repo, ref)
        picker_reads = any(r.startswith(("src/sym_kernels.cc:", "src/scheduler/symmetric_sched.cc:")) for r in reads)
        algo_fact = {"symmetric_off": False, "where": reads, "picker_reads": picker_reads,
                     "text": "NCCL_ALGO is read by name at "
                             f"{', '.join(reads) or 'no place'}; src/sym_kernels.cc and "
                             "src/scheduler/symmetric_sched.cc, "
                             f"which pick the symmetric kernel, {'read it' if picker_reads else 'never read it'}"}
    generate = read_source(repo, ref, "src/device/symmetric/generate.py") or ""
    return {"ref": ref, "commit": commit, "what": what,
            "rule": None if rule is None else {"rule": rule[0], "where": rule[1], "text": rule[2]},
            "algo": algo_fact, "generate_py_sync_calls": generate.count("cudaGridDependencySynchronize")}


def audit_version(version: str, cache: Path, repo: Optional[Path], tool_paths) -> dict:
    cuobjdump, nvdisasm, tool_wheels = tool_paths
    wheel = download(f"{WHEEL}=={version}", cache / f"{WHEEL}-{version}")
    found = extract(wheel, ["lib/libnccl.so.2", "include/nccl.h"], cache / f"{WHEEL}-{version}" / "extracted")
    blob = found["lib/libnccl.so.2"].read_bytes()
    kernels = audit_sass(found["lib/libnccl.so.2"], cache / f"{WHEEL}-{version}" / "cubins", cuobjdump, nvdisasm)
    found["lib/libnccl.so.2"].unlink()  # 200+ MB; the wheel stays in the cache
    with_fence = sorted(s for s, has in kernels.items() if has)
    without = sorted(s for s, has in kernels.items() if not has)
    return {
        "version": version,
        "wheel": wheel.name,
        "sha256": sha256(wheel),
        "tools": tool_wheels,
        "kernels": {"arch": ARCH, "total": len(kernels), "with_fence": len(with_fence), "without_fence": len(without),
                    "without": [kernel_name(s) for s in without],
                    "names": sorted({kernel_name(s) for s in kernels})},
        "race_fix_in_every_kernel": bool(kernels) and not without,
        "parameters": parameter_names(blob),
        "header_names": header_names(found["include/nccl.h"].read_text(errors="replace")),
        "fingerprints": fingerprints(blob),
        "source": source_facts(repo, version),
    }


# --- the record ---------------------------------------------------------------------------------------------------

def rule_cell(record: dict) -> str:
    rule = record["source"].get("rule")
    if not rule:
        return "not read"
    tag = "" if record["source"]["ref"] != "dev" else " (dev branch)"
    return f"{rule['rule']}{tag}"


def algo_cell(record: dict) -> str:
    algo = record["source"].get("algo")
    if not algo:
        return "not read"
    tag = "" if record["source"]["ref"] != "dev" else " (dev branch)"
    if algo["symmetric_off"]:
        return ("turns symmetric kernels off for the functions it covers; NCCL_SYM_KERNEL re-enables those it "
                "names" + tag)
    if algo.get("picker_reads"):
        return "read where the symmetric kernel is picked: see the record" + tag
    return "not read where the symmetric kernel is picked (no direct effect)" + tag


def render(records: Sequence[dict]) -> str:
    out = ["# NCCL audit: what the published `nvidia-nccl-cu13` wheels carry",
           "",
           "Made by `maint/nccl_audit.py` (read its docstring for the method); regenerate, never edit. Each record",
           "below says the command and the date that made it. No GPU: `cuobjdump -xelf` and `nvdisasm` (from the",
           "`nvidia-cuda-cuobjdump`/`nvidia-cuda-nvdisasm` wheels) read the sm_90 machine code of every",
           "`ncclSymkDevKernel_*`; `cudaGridDependencySynchronize()` compiles to `ACQBULK` there (the race fix,",
           "NCCL commit 2948185, 2.30.7). The registration rule and `NCCL_ALGO`'s effect are read in NCCL's source at",
           "the release tag, or on branch `dev` where no tag exists (said so in the row): not from the host machine",
           "code.",
           "",
           "| NCCL | sm_90 symmetric kernels with `ACQBULK` | race fix in every kernel | AllGather registration "
           "rule | `NCCL_ALGO` on symmetric kernels | new `NCCL_SYM*`/`NCCL_WIN_*` names (binary strings; nccl.h) |",
           "|---|---|---|---|---|---|"]
    for r in records:
        k = r["kernels"]
        new = r.get("new_parameters")
        new_cell = "(first audited)" if new is None else (
            ", ".join(f"`{n}`" for n in new + [h + " (nccl.h)" for h in r["new_header_names"]]) or "none")
        fixed = "yes" if r["race_fix_in_every_kernel"] else "no"
        out.append(f"| {r['version']} | {k['with_fence']} of {k['total']} | {fixed} "
                   f"| {rule_cell(r)} | {algo_cell(r)} | {new_cell} |")
    for r in records:
        s, k = r["source"], r["kernels"]
        out += ["", f"## NCCL {r['version']}", "",
                f"- made by: `{r['command']}` on {r['date']}",
                f"- wheel: `{r['wheel']}` sha256 `{r['sha256']}`; tools: {', '.join(f'`{t}`' for t in r['tools'])}",
                f"- (a) {k['total']} distinct `ncclSymkDevKernel_*` symbols in the {k['arch']} cubins; "
                f"{k['with_fence']} with `ACQBULK`, {k['without_fence']} without"
                + f". Kernel families (type and profile variants folded): {', '.join(kernel_families(k['names']))}.",
                f"- source read: {s['what']}" + (f", commit `{s['commit'][:12]}`" if s.get("commit") else "")
                + (f"; `cudaGridDependencySynchronize` appears {s['generate_py_sync_calls']} times in "
                   f"`src/device/symmetric/generate.py` there" if s.get("generate_py_sync_calls") is not None else "")]
        rule = s.get("rule")
        out.append(f"- (b) {rule['rule']}: {rule['text']} (`{rule['where']}` at {s['ref']})" if rule
                   else "- (b) not read: no rule pattern matched the source" if s.get("ref") else f"- (b) {s['what']}")
        algo = s.get("algo")
        if algo:
            where = ", ".join(f"`{w}`" for w in algo["where"])
            out.append(f"- (c) {algo['text']} ({where} at {s['ref']})")
        out.append("- not read from this binary: the rules in (b) and (c) themselves (host machine code)"
                   + (", so for this release they are the dev branch's" if s.get("ref") == "dev" else "")
                   + "; what its strings show: " + "; ".join(
                       f"{label} ({FINGERPRINTS[label][1]}): {'yes' if v else 'no'}"
                       for label, v in r["fingerprints"].items() if label in FINGERPRINTS))
        out.append(f"- (d) names in `libnccl.so.2`: {', '.join(f'`{n}`' for n in r['parameters'])}")
        out.append(f"  in `nccl.h`: {', '.join(f'`{n}`' for n in r['header_names'])}")
        if r.get("compared_with"):
            out.append(f"  new against {r['compared_with']}: binary "
                       f"{', '.join(f'`{n}`' for n in r['new_parameters']) or 'none'}; header "
                       f"{', '.join(f'`{n}`' for n in r['new_header_names']) or 'none'}; gone: binary "
                       f"{', '.join(f'`{n}`' for n in r['gone_parameters']) or 'none'}; header "
                       f"{', '.join(f'`{n}`' for n in r['gone_header_names']) or 'none'}")
    return "\n".join(out) + "\n"


def load(path: Path) -> List[dict]:
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["records"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(f"{path} is not an audit record: move it away and run again") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maint.nccl_audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", metavar="VERSION", help="nvidia-nccl-cu13 releases, e.g. 2.32.6")
    parser.add_argument("--nccl-repo", type=Path, help="a git clone of github.com/NVIDIA/nccl (tags and branch dev)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--json", type=Path, default=OUT_JSON)
    parser.add_argument("--md", type=Path, default=OUT_MD)
    parser.add_argument("--render", action="store_true",
                        help="only render the markdown again from the JSON record (no VERSION, no download)")
    args = parser.parse_args(argv)
    try:
        if args.render:
            ordered = sorted(load(args.json), key=lambda r: version_key(r["version"]))
            args.md.write_text(render(ordered))
            print(f"nccl-audit: rendered {args.md} from {args.json} ({len(ordered)} records)")
            return 0
        if not args.versions:
            raise AuditError("name at least one nvidia-nccl-cu13 version, e.g. 2.32.6 (or --render)")
        versions = sorted(set(args.versions), key=version_key)
        repo = args.nccl_repo
        if repo is not None and not (repo / "HEAD").exists() and not (repo / ".git").exists():
            raise AuditError(f"--nccl-repo {str(args.nccl_repo)[:80]} is not a git repository")
        records = {r["version"]: r for r in load(args.json)}
        tool_paths = tools(args.cache)
        command = "python -m maint.nccl_audit " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        today = datetime.date.today().isoformat()
        for version in versions:
            print(f"nccl-audit: {version} ...", flush=True)
            record = audit_version(version, args.cache, args.nccl_repo, tool_paths)
            record.update(command=command, date=today)
            records[version] = record
            k = record["kernels"]
            print(f"nccl-audit: {version}: {k['with_fence']} of {k['total']} symmetric kernels with {FENCE}; "
                  f"rule {rule_cell(record)}; NCCL_ALGO: {algo_cell(record)}", flush=True)
        ordered = sorted(records.values(), key=lambda r: version_key(r["version"]))
        new_names(ordered)
        args.json.write_text(json.dumps({"records": ordered}, indent=1, sort_keys=True) + "\n")
        args.md.write_text(render(ordered))
        print(f"nccl-audit: wrote {args.md} and {args.json}")
        return 0
    except AuditError as e:
        print(f"nccl-audit: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

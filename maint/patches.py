"""Generate ``patches/`` from the register: the runtime change as unified diffs against a release's files.

Nothing in ``patches/`` is written by hand. For one release this module takes the
release's own files, applies the very edits the plugin makes at run time
(``rewrite``) to every target, adds the imports those edits need, and, where the
allocator registers segments only at creation (0.5.9-0.5.11), adds the CP
group's own pool to ``pynccl_allocator.py`` using the source of
``sglang_cp_symm.engine.pool`` itself. Two patches per release at most:

- ``0001-cp-symm-default.patch``: what the plugin does by default (output
  buffers, CP pool); only for releases where that is not a no-op;
- ``0002-cp-symm-send-staging.patch``: the opt-in send staging, on top of 0001.

Command, from a checkout: ``python -m maint.patches --wheel-dir DIR --out patches`` (wheels
downloaded with ``pip download --no-deps sglang==X``, or ``ci/fetch-wheels.sh``). Maintainer-only: it
is not in the wheel, as a user applies the plugin, or the committed ``patches/``, never this generator.
``tests/tools/test_patches_and_sweep.py`` holds ``patches/`` byte-identical to this output.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from sglang_cp_symm.engine import pool, send_staging
from sglang_cp_symm.engine.rewrite import REQUIRED_NAMES, STAGE_SEND_NAME, rewrite_function_source
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import (POOL_FIX, SYMMETRIC_CONTEXT_MODULE, TARGETS, Target, is_supported,
                                    needs_output_patch, targets_for)
from maint.source_survey import (NEEDS_PATCH, UPSTREAM, find_function, injected_name_report,
                                                module_path, target_state)

ALLOCATOR_PATH = module_path(SYMMETRIC_CONTEXT_MODULE)
MARK = "sglang-cp-symm"


class PatchError(Exception):
    """The release's files are not what the register says; nothing is generated for it."""


def _rewrite_in_module(text: str, target: Target, output: bool, send: bool) -> str:
    tree = ast.parse(text)
    node = find_function(tree, target.function)
    lines = text.splitlines()
    original = lines[node.lineno - 1 : node.end_lineno]
    indent = original[0][: len(original[0]) - len(original[0].lstrip())]
    new = rewrite_function_source("\n".join(original) + "\n", target, output=output, send=send)
    reindented = [(indent + line) if line.strip() else line for line in new.splitlines()]
    return "\n".join(lines[: node.lineno - 1] + reindented + lines[node.end_lineno :]) + "\n"


def _bound_at_module_level(tree: ast.Module, name: str) -> bool:
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
    return False


def _add_imports(text: str, names: Dict[str, str]) -> str:
    """Add ``from MODULE import NAME`` after the module's last top-level import, for names not bound yet."""
    tree = ast.parse(text)
    missing = {n: m for n, m in names.items() if not _bound_at_module_level(tree, n)}
    if not missing:
        return text
    first_def = next((n.lineno for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))), None)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
               and (first_def is None or n.lineno < first_def)]
    at = imports[-1].end_lineno if imports else 0
    lines = text.splitlines()
    added = [f"from {module} import {name}  # {MARK}" for name, module in sorted(missing.items())]
    return "\n".join(lines[:at] + added + lines[at:]) + "\n"


#: The plugin's helper functions copied into sglang's own module, and the private names they take there.
POOL_HELPERS = ("gather_group", "tp_group", "needs_own_pool", "pool_for")
SEND_HELPERS = ("attention_cp_group",)


def in_sglang(name: str) -> str:
    """The name a copied helper gets inside sglang's module: private, and marked as ours."""
    return f"_cp_symm_{name.lstrip('_')}"


def _renamed(source: str, names) -> str:
    """``source`` with each of ``names`` (as a whole word) replaced by its name inside sglang."""
    for name in names:
        source = re.sub(rf"(?<![\w.]){re.escape(name)}\b", in_sglang(name), source)
    return source


def _pool_helpers_source(release: Release) -> str:
    names = POOL_HELPERS + ("_pools",)
    parts = [inspect.getsource(getattr(pool, name)) for name in POOL_HELPERS]
    getter = POOL_FIX.group_getter(release)
    chooser = (
        "def _cp_symm_pool(group_coordinator):\n"
        '    """The pool a symmetric context of this group allocates from: the CP group\'s own, else the shared one."""\n'
        "    shared = get_nccl_mem_pool()  # also builds _allocator on first use\n"
        f"    own = needs_own_pool(group_coordinator, {getter!r})\n"
        "    return pool_for(group_coordinator, _allocator, _pools) if own else shared\n"
    )
    return _renamed(f"\n\n# --- {MARK}: a symmetric pool of the attention-CP group's own ---\n"
                    "# Generated from sglang_cp_symm.engine.pool: this allocator registers a segment only with the\n"
                    "# communicator whose context creates it, so the CP group's buffers get segments of their own.\n"
                    "from typing import Any, Dict, Optional  # noqa: E402\n\n"
                    "_pools = {}\n\n\n" + "\n\n".join(parts) + "\n\n" + chooser, names)


def _add_pool_fix(text: str, release: Release) -> str:
    """Every ``get_nccl_mem_pool()`` in ``SymmetricMemoryContext`` becomes ``_cp_symm_pool(<its group>)``.

    That covers both shapes of the class: 0.5.11 (``self._pool_id = get_nccl_mem_pool().id``) and
    0.5.9-0.5.10 (``torch.cuda.use_mem_pool(get_nccl_mem_pool())`` in ``__init__`` and on re-entry).
    """
    tree = ast.parse(text)
    for name in [in_sglang(n) for n in POOL_HELPERS + ("_pools",)] + ["_cp_symm_pool"]:
        if _bound_at_module_level(tree, name):
            raise PatchError(f"{ALLOCATOR_PATH} already defines {name}")
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == POOL_FIX.context_class), None)
    if cls is None:
        raise PatchError(f"{POOL_FIX.context_class} not found")
    calls = []
    for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        group = "group_coordinator" if method.name == "__init__" else "self.group_coordinator"
        for node in ast.walk(method):
            if isinstance(node, ast.Call) and ast.unparse(node) == "get_nccl_mem_pool()":
                calls.append((node.lineno, node.col_offset, node.end_col_offset, group))
    if not calls or not any(g == "group_coordinator" for *_, g in calls):
        raise PatchError("SymmetricMemoryContext.__init__ does not call get_nccl_mem_pool()")
    lines = text.splitlines()
    for lineno, start, end, group in sorted(calls, reverse=True):
        line = lines[lineno - 1]
        lines[lineno - 1] = line[:start] + f"_cp_symm_pool({group})" + line[end:]
    return "\n".join(lines) + "\n" + _pool_helpers_source(release)


def _send_helper_source() -> str:
    parts = [inspect.getsource(getattr(send_staging, name)) for name in SEND_HELPERS + (STAGE_SEND_NAME,)]
    body = _renamed("\n\n".join(parts), SEND_HELPERS)
    return (f"\n\n# --- {MARK}: send-buffer staging (generated from sglang_cp_symm.engine.send_staging) ---\n"
            "from contextlib import nullcontext as _cp_symm_nullcontext  # noqa: E402\n"
            "from typing import Any, Optional  # noqa: E402\n\n\n"
            + body.replace("isinstance(context, nullcontext)", "isinstance(context, _cp_symm_nullcontext)"))


def patched_files(read: Callable[[str], Optional[str]], release: Release, send: bool) -> Dict[str, tuple]:
    """{path: (original text, patched text)} for one release; default mode, plus send staging if ``send``."""
    if not is_supported(release):
        raise PatchError(f"sglang {release} is outside the register")
    files: Dict[str, List[str]] = {}
    originals: Dict[str, str] = {}

    def current(path: str) -> str:
        if path not in originals:
            text = read(path)
            if text is None:
                raise PatchError(f"{path} missing in sglang {release}")
            originals[path] = text
            files[path] = [text]
        return files[path][-1]

    for target in TARGETS:
        if not target.exists_in(release):
            continue
        path = module_path(target.module)
        fact = target_state(read(path), target)
        state, detail = fact.state, fact.detail
        if state not in (NEEDS_PATCH, UPSTREAM):
            raise PatchError(f"{target.dotted} in sglang {release}: {state}: {detail}")
        output = state == NEEDS_PATCH
        if not (output or send):
            continue
        names = injected_name_report(current(path), target, release, send)
        unresolved = sorted(n for n, where in names.items() if n == "refused" or where == "missing")
        if unresolved:
            raise PatchError(f"{target.dotted} in sglang {release}: the inserted code needs {unresolved}, which "
                             f"{path} does not define")
        text = _rewrite_in_module(current(path), target, output=output, send=send)
        needed = dict(REQUIRED_NAMES) if output else {}
        if send:
            needed[STAGE_SEND_NAME] = SYMMETRIC_CONTEXT_MODULE
        files[path].append(_add_imports(text, needed))
    if POOL_FIX.applies_to(release):
        files.setdefault(ALLOCATOR_PATH, [current(ALLOCATOR_PATH)])
        files[ALLOCATOR_PATH].append(_add_pool_fix(files[ALLOCATOR_PATH][-1], release))
    if send:
        current(ALLOCATOR_PATH)
        files[ALLOCATOR_PATH].append(files[ALLOCATOR_PATH][-1] + _send_helper_source())
    return {p: (originals[p], versions[-1]) for p, versions in files.items() if versions[-1] != originals[p]}


def unified_diff(changes: Dict[str, tuple]) -> str:
    out = []
    for path in sorted(changes):
        before, after = changes[path]
        out.extend(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
    return "".join(out)


def header(release: Release, kind: str) -> str:
    patched = [t for t in needs_output_patch(release)]
    lines = [f"sglang-cp-symm patch for sglang {release}: {kind}", ""]
    if kind == "default mode":
        lines += ["What: the all-gather output buffer of each target below is allocated inside sglang's own",
                  "use_symmetric_memory(<attention CP group>, disabled=not is_allocation_symmetric()); nothing else moves."]
        for t in patched:
            lines.append(f"  - {t.dotted}: backports {t.fixed_by}; drop from {t.drop_when}")
        if POOL_FIX.applies_to(release):
            lines += ["  - pynccl_allocator.SymmetricMemoryContext: the attention-CP group (when it is not the TP group)",
                      "    allocates from a pool of its own, so its segments are registered with the CP communicator;",
                      f"    the idea of {POOL_FIX.fixed_by}; drop from {POOL_FIX.drop_when}"]
        lines.append("Why: without it NCCL cannot pick its symmetric kernels for the CP all-gather (see README).")
    else:
        lines += ["What: each CP all-gather below sends from a copy of its input staged in the CP group's symmetric pool",
                  "(cp_symm_stage_send, appended to pynccl_allocator.py). Opt-in: NCCL 2.27-2.28 need it to pick the",
                  "symmetric kernel, and 2.28.0-2.30.6 kernels can race on Hopper (see README's NCCL table).",
                  "None upstream (sglang PR #37337 is an open proposal for CP-v2). Drop when upstream registers send buffers."]
        for t in targets_for(release):
            lines.append(f"  - {t.dotted}")
    lines += ["Generated by `python -m maint.patches` from sglang_cp_symm/targets.py; do not edit.",
              "Apply from site-packages (or the sglang repository's python/): git apply -p1 FILE  (or patch -p1 < FILE)", ""]
    return "\n".join(lines)


def patch_texts(read: Callable[[str], Optional[str]], release: Release) -> Dict[str, str]:
    """{file name: patch text} for one release."""
    out = {}
    default = patched_files(read, release, send=False)
    if default:
        out["0001-cp-symm-default.patch"] = header(release, "default mode") + "\n" + unified_diff(default)
    both = patched_files(read, release, send=True)
    staged = {p: (default.get(p, (o, o))[1], after) for p, (o, after) in both.items()}
    staged = {p: ba for p, ba in staged.items() if ba[0] != ba[1]}
    if staged:
        out["0002-cp-symm-send-staging.patch"] = header(release, "send staging (opt-in)") + "\n" + unified_diff(staged)
    return out


def wheel_reader(wheel: Path) -> Callable[[str], Optional[str]]:
    import zipfile

    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    return lambda path: archive.read(path).decode("utf-8") if path in names else None


def write_patches(wheel_dir: Path, out_dir: Path) -> List[Path]:
    """Generate patches for every supported release whose wheel is in ``wheel_dir``."""
    written = []
    for wheel in sorted(wheel_dir.glob("sglang-*.whl")):
        match = re.match(r"sglang-(\d+\.\d+\.\d+)-", wheel.name)
        if not match:
            continue
        release = Release.parse(match.group(1))
        if not is_supported(release):
            continue
        for name, text in patch_texts(wheel_reader(wheel), release).items():
            path = out_dir / f"sglang-{release}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def main(argv=None) -> int:
    """``python -m maint.patches --wheel-dir DIR [--out patches]``: one line per file written; exit 1 if none."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m maint.patches", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--wheel-dir", required=True, help="folder of sglang-X wheels (pip download --no-deps)")
    parser.add_argument("--out", default="patches")
    args = parser.parse_args(argv)
    wheel_dir = Path(args.wheel_dir)
    if not wheel_dir.is_dir():
        print(f"--wheel-dir {str(wheel_dir)[:200]!r} is not a folder: give the folder of sglang wheels "
              "(ci/fetch-wheels.sh fills .cache/wheels)", file=sys.stderr)
        return 2
    written = write_patches(wheel_dir, Path(args.out))
    for path in written:
        print(path)
    if not written:
        print(f"no supported sglang wheel in {str(wheel_dir)[:200]}: nothing written", file=sys.stderr)
    return 0 if written else 1


__all__ = ["PatchError", "patch_texts", "patched_files", "write_patches", "wheel_reader"]

if __name__ == "__main__":
    sys.exit(main())

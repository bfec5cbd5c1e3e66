"""Carry an NCCL the device machine cannot download: split here, join and verify there.

The lent GPU machines reach no registry, and one device call carries at most 64 MiB of working tree.
``nvidia-nccl-cu13==2.30.7`` is a 216 MB wheel whose ``libnccl.so.2`` is 252 MB (xz -9e: 200 MB; most
of it is already-compressed device code), so it travels in parts, over several calls, into a folder
that persists on the warm machine between calls.

Here (``prepare``): the wheel from pip, its ``libnccl.so.2`` checked against the wheel's own RECORD
hash, compressed with xz, cut into parts sized for the calls (the first can share its call with the
sglang wheels), each part in a folder of its own under ``.whl/nccl-<version>/`` (so a call's ``carry``
names exactly its parts), with ``MANIFEST.json`` (sizes and sha256 of every piece) beside them.

There (``add``): each carried part checked and copied into ``--store`` (default
``/root/nccl-carry/<version>``); once all are there, joined, checked, decompressed, checked against
the RECORD hash again and installed as ``<prefix>/nvidia/nccl/lib/libnccl.so.2`` (the wheel's own layout),
then ``verify``: ``ncclGetVersion`` through sglang's pynccl loader with ``SGLANG_NCCL_SO_PATH`` (the
library the engine's communicator uses), and ``torch.cuda.nccl.version()`` with the library preloaded.
Each step prints one line; a missing part names the calls to repeat.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import zipfile
from typing import List, Optional

LIB_IN_WHEEL = "nvidia/nccl/lib/libnccl.so.2"
MiB = 1 << 20
CALL_LIMIT = 64 * MiB


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def record_hash(wheel: str, member: str) -> Optional[str]:
    """The member's sha256 as the wheel's RECORD states it (urlsafe base64 without padding), as hex."""
    with zipfile.ZipFile(wheel) as z:
        record = next((n for n in z.namelist() if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            return None
        for line in z.read(record).decode().splitlines():
            name, _, rest = line.partition(",")
            if name == member and rest.startswith("sha256="):
                digest = rest.split(",")[0][len("sha256="):]
                return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return None


def version_code(version: str) -> int:
    major, minor, patch = (int(p) for p in version.split(".")[:3])
    return major * 10000 + minor * 100 + patch


# -- here ----------------------------------------------------------------------------------


def plan_parts(total: int, first_room: int, room: int) -> List[int]:
    """Part sizes: the first fits ``first_room``, the others ``room`` (bytes); no empty part."""
    if room <= 0:
        raise SystemExit("nccl carry: no room left in a call for a part; carry less beside it")
    sizes, left = [], total
    first = min(left, max(0, first_room))
    if first > 0:
        sizes.append(first)
        left -= first
    while left > 0:
        sizes.append(min(left, room))
        left -= sizes[-1]
    return sizes


def prepare(args) -> int:
    wheel = args.wheel
    want = record_hash(wheel, LIB_IN_WHEEL)
    if want is None:
        raise SystemExit(f"nccl carry: {os.path.basename(wheel)} has no RECORD entry for {LIB_IN_WHEEL}")
    dest = args.dest
    os.makedirs(dest, exist_ok=True)
    work = args.work or os.path.join(".cache", "nccl-carry", args.version)  # ignored, never carried; xz is slow
    os.makedirs(work, exist_ok=True)
    lib = os.path.join(work, "libnccl.so.2")
    with zipfile.ZipFile(wheel) as z, z.open(LIB_IN_WHEEL) as src, open(lib, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    got = sha256_file(lib)
    if got != want:
        raise SystemExit(f"nccl carry: libnccl.so.2 from the wheel has sha256 {got[:16]}..., RECORD says {want[:16]}...")
    packed = lib + ".xz"
    if not (os.path.exists(packed) and os.path.exists(packed + ".src") and open(packed + ".src").read() == got):
        print(f"nccl carry: compressing {os.path.getsize(lib) / MiB:.0f} MiB with xz -9e (minutes)", flush=True)
        if shutil.which("xz"):
            with open(packed, "wb") as out:
                subprocess.run(["xz", "-9e", "-T0", "-c", lib], stdout=out, check=True)
        else:
            with open(lib, "rb") as src, lzma.open(packed, "wb", preset=9 | lzma.PRESET_EXTREME) as out:
                shutil.copyfileobj(src, out, 1 << 22)
        with open(packed + ".src", "w") as f:
            f.write(got)
    size = os.path.getsize(packed)
    margin = int(args.margin_mib * MiB)
    room = CALL_LIMIT - args.tree_bytes - margin
    first_room = room - args.first_call_bytes
    sizes = plan_parts(size, first_room, room)
    for old in os.listdir(dest):
        if old.startswith("p") and old[1:].isdigit():
            shutil.rmtree(os.path.join(dest, old))
    parts, offset = [], 0
    with open(packed, "rb") as src:
        for i, n in enumerate(sizes):
            folder = os.path.join(dest, f"p{i}")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"libnccl.so.2.xz.{i:02d}")
            with open(path, "wb") as out:
                out.write(src.read(n))
            parts.append({"index": i, "folder": f"p{i}", "file": os.path.basename(path), "bytes": n,
                          "sha256": sha256_file(path)})
            offset += n
    manifest = {"version": args.version, "code": version_code(args.version), "wheel": os.path.basename(wheel),
                "wheel_sha256": sha256_file(wheel), "member": LIB_IN_WHEEL, "lib_bytes": os.path.getsize(lib),
                "lib_sha256": got, "lib_sha256_from": "the wheel's RECORD", "xz_bytes": size,
                "xz_sha256": sha256_file(packed), "parts": parts}
    with open(os.path.join(dest, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.remove(lib)  # the xz stays in the work folder: compressing again takes minutes
    rel = os.path.relpath(dest)
    print(f"nccl carry: NCCL {args.version}: libnccl.so.2 {manifest['lib_bytes'] / MiB:.1f} MiB (sha256 {got[:12]}, "
          f"as in the wheel's RECORD) -> xz {size / MiB:.1f} MiB in {len(parts)} part(s): "
          + ", ".join(f"{rel}/{p['folder']} {p['bytes'] / MiB:.1f} MiB" for p in parts))
    print(f"nccl carry: room per call {room / MiB:.1f} MiB (64 MiB less the tree {args.tree_bytes / MiB:.1f} MiB and "
          f"{args.margin_mib} MiB margin); the first part leaves {args.first_call_bytes / MiB:.1f} MiB for what travels "
          f"with it; carry {rel}/MANIFEST.json in every call")
    return 0


# -- there ---------------------------------------------------------------------------------


def load_manifest(carried: str) -> dict:
    path = os.path.join(carried, "MANIFEST.json")
    if not os.path.exists(path):
        raise SystemExit(f"nccl carry: no {path}: carry it in every call (see docs/stage-d.md)")
    with open(path) as f:
        return json.load(f)


def add(args) -> int:
    manifest = load_manifest(args.carried)
    store = args.store or os.path.join("/root/nccl-carry", manifest["version"])
    os.makedirs(store, exist_ok=True)
    added = []
    for part in manifest["parts"]:
        src = os.path.join(args.carried, part["folder"], part["file"])
        dst = os.path.join(store, part["file"])
        if os.path.exists(src) and not (os.path.exists(dst) and os.path.getsize(dst) == part["bytes"]):
            got = sha256_file(src)
            if got != part["sha256"]:
                raise SystemExit(f"nccl carry: part {part['index']} arrived damaged (sha256 {got[:12]}, "
                                 f"manifest {part['sha256'][:12]}); carry it again")
            shutil.copyfile(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)
            added.append(part["index"])
    present = [p["index"] for p in manifest["parts"]
               if os.path.exists(os.path.join(store, p["file"]))
               and os.path.getsize(os.path.join(store, p["file"])) == p["bytes"]]
    missing = [p["index"] for p in manifest["parts"] if p["index"] not in present]
    print(f"nccl carry: NCCL {manifest['version']}: added part(s) {added or 'none'}; present {present} of "
          f"{len(manifest['parts'])} in {store}" + (f"; still to carry: {missing} (folders "
          f"{', '.join(manifest['parts'][i]['folder'] for i in missing)})" if missing else ""), flush=True)
    if missing:
        return 3
    return join(manifest, store, args.prefix)


def join(manifest: dict, store: str, prefix: Optional[str]) -> int:
    prefix = prefix or os.path.join("/tmp", f"nccl-{manifest['version']}")
    lib = os.path.join(prefix, manifest["member"])
    if os.path.exists(lib) and sha256_file(lib) == manifest["lib_sha256"]:
        print(f"nccl carry: {lib} already installed and checked")
        return 0
    joined = os.path.join(store, "libnccl.so.2.xz")
    with open(joined + ".tmp", "wb") as out:
        for part in manifest["parts"]:
            with open(os.path.join(store, part["file"]), "rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    os.replace(joined + ".tmp", joined)
    got = sha256_file(joined)
    if got != manifest["xz_sha256"]:
        raise SystemExit(f"nccl carry: the joined parts have sha256 {got[:12]}, manifest {manifest['xz_sha256'][:12]}")
    os.makedirs(os.path.dirname(lib), exist_ok=True)
    with lzma.open(joined, "rb") as src, open(lib + ".tmp", "wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    got = sha256_file(lib + ".tmp")
    if got != manifest["lib_sha256"]:
        raise SystemExit(f"nccl carry: libnccl.so.2 decompressed to sha256 {got[:12]}, the wheel's RECORD says "
                         f"{manifest['lib_sha256'][:12]}")
    os.replace(lib + ".tmp", lib)
    print(f"nccl carry: installed {lib} ({os.path.getsize(lib) / MiB:.1f} MiB, sha256 {got[:12]} = the RECORD of "
          f"{manifest['wheel']})", flush=True)
    return 0


VERIFY_PYNCCL = """
import sys
from sglang.srt.distributed.device_communicators.pynccl_wrapper import NCCLLibrary, find_nccl_library
path = find_nccl_library()
print("pynccl loader:", path, "->", NCCLLibrary(path).ncclGetVersion())
"""
VERIFY_CTYPES = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1]); code = ctypes.c_int()
assert lib.ncclGetVersion(ctypes.byref(code)) == 0
print("ncclGetVersion:", code.value)
"""
VERIFY_TORCH = """
import torch
if torch.version.cuda is None:
    print("torch.cuda.nccl.version() with LD_PRELOAD: n/a: this torch has no CUDA")
else:
    print("torch.cuda.nccl.version() with LD_PRELOAD:", torch.cuda.nccl.version())
"""
NOT_HERE = "n/a: this torch has no CUDA"


def verify(args) -> int:
    """The installed library through the loaders the engine uses; exit 1 unless each reports the version."""
    manifest = load_manifest(args.carried)
    lib = os.path.join(args.prefix or os.path.join("/tmp", f"nccl-{manifest['version']}"), manifest["member"])
    want_code, want = manifest["code"], manifest["version"]
    results, ok = [], True
    for label, code, env, needle in (
        ("ctypes", VERIFY_CTYPES, {}, str(want_code)),
        ("pynccl", VERIFY_PYNCCL, {"SGLANG_NCCL_SO_PATH": lib}, want),
        ("torch", VERIFY_TORCH, {"LD_PRELOAD": lib}, f"({', '.join(want.split('.'))})"),
    ):
        if label == "pynccl" and not args.with_sglang:
            continue
        run = subprocess.run([sys.executable, "-c", code, lib], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=300)
        line = (run.stdout.strip().splitlines() or [run.stderr.strip()[-300:]])[-1]
        skipped = run.returncode == 0 and NOT_HERE in line
        good = run.returncode == 0 and (needle in line or skipped)
        ok &= good
        results.append(f"  {label}: {'skipped' if skipped else 'ok' if good else 'FAILED'}: {line}")
        if not good:
            break  # the later loaders open the same file: they cannot do better
    print(f"nccl carry: verify {lib} (want {want}, code {want_code}):")
    print("\n".join(results), flush=True)
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stage_d.nccl_carry", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="here: the wheel's libnccl.so.2, checked, xz, in parts with a manifest")
    pp.add_argument("--wheel", required=True)
    pp.add_argument("--version", required=True)
    pp.add_argument("--dest", required=True, help="e.g. .whl/nccl-2.30.7")
    pp.add_argument("--tree-bytes", type=int, default=2 * MiB, help="what the working tree itself takes in a call")
    pp.add_argument("--first-call-bytes", type=int, default=0, help="what else travels with the first part")
    pp.add_argument("--margin-mib", type=float, default=1.0)
    pp.add_argument("--work", default=None, help="where the library and its xz are kept (default .cache/nccl-carry/V)")
    pa = sub.add_parser("add", help="there: store the carried parts; join, check and install once all are there")
    pa.add_argument("--carried", required=True, help="the carried folder, e.g. .whl/nccl-2.30.7")
    pa.add_argument("--store", default=None)
    pa.add_argument("--prefix", default=None, help="install root (default /tmp/nccl-<version>)")
    pv = sub.add_parser("verify", help="there: ncclGetVersion through ctypes, sglang's pynccl loader and torch")
    pv.add_argument("--carried", required=True)
    pv.add_argument("--prefix", default=None)
    pv.add_argument("--with-sglang", action="store_true", help="also through sglang's pynccl loader")
    args = p.parse_args(argv)
    return {"prepare": prepare, "add": add, "verify": verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

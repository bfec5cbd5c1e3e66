"""Command line (also ``python -m sglang_cp_symm``): ``doctor``, ``status``, ``demo``, ``demo-warmup``."""
# Patch generation is a maintainer's tool, not in the wheel: ``python -m maint.patches`` from a checkout.

from __future__ import annotations

import argparse
import json
import sys

from ..engine.sizing import PRESETS


def _status(args) -> int:
    """What the plugin does here. ``--apply`` decides on/off exactly as the engine does (a bad value is off)."""
    from .. import status
    from ..engine.plugin import activate
    from ..engine.settings import read_settings
    from ..releases import installed_sglang_version

    settings = read_settings()
    imports: dict = {}
    if args.apply:
        try:
            if activate():
                imports = import_register_modules()
        except SystemExit as exc:  # strict mode refused: one line, exit status 2
            print(str(exc.code), file=sys.stderr)
            return 2
    report = status()
    report["sglang"] = installed_sglang_version()
    report["imports"] = imports
    if not args.apply:
        report["note"] = "nothing applied in this process; pass --apply to patch and import the targets here"
    elif not settings.enabled:
        report["note"] = "the plugin is off (SGLANG_CP_SYMM is not on), so --apply applied nothing"
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"sglang: {report['sglang'] or 'not installed'}   mode: {report['mode']}   outcome: {report['outcome']}")
    for problem in settings.problems:
        print(f"  problem: {problem}")
    for module, state in imports.items():
        if state != "imported":
            print(f"  {module}: {state}")
    for name, t in report["targets"].items():
        detail = f" ({t['detail']})" if t["detail"] else ""
        print(f"  {name:<34} {t['state']}{detail}")
    if "note" in report:
        print(report["note"])
    return 0


def import_register_modules() -> dict:
    """Import every module the register names for this release, as a scheduler would; {module: what happened}.

    A module that is not in the release is "not present"; one that is there but
    raises while it imports is "failed to import: <error>", never confused with the first.
    """
    import importlib
    import importlib.util

    from ..engine.patching import PATCHER
    from ..targets import POOL_FIX, targets_for

    if PATCHER.release is None:
        return {}
    modules = sorted({t.module for t in targets_for(PATCHER.release)} | {POOL_FIX.module})
    outcome = {}
    for module in modules:
        try:
            present = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError) as exc:  # a parent package failed to import
            outcome[module] = f"failed to import: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        if not present:
            outcome[module] = "not present"
            continue
        try:
            importlib.import_module(module)
            outcome[module] = "imported"
        except SystemExit:
            raise
        except BaseException as exc:
            outcome[module] = f"failed to import: {type(exc).__name__}: {str(exc)[:200]}"
    return outcome


def _demo(args) -> int:
    from .proof_report import run_demo

    return run_demo(world=args.world, rounds=args.rounds, nccl=args.as_nccl, every=args.every)


def _demo_warmup(args) -> int:
    from .warmup_rehearsal import run_demo

    argv = list(args.sglang_args)
    return run_demo(argv[1:] if argv[:1] == ["--"] else argv)


def _doctor(args) -> int:
    from .doctor import ServeShape, run

    shape = ServeShape(cp_size=args.cp_size, chunked_prefill_size=args.chunked_prefill_size,
                       context_length=args.context_length, page_size=args.page_size, tp_size=args.tp_size,
                       dp_size=args.dp_size, enable_dp_attention=args.enable_dp_attention, model=args.model,
                       kv_dtype=args.kv_dtype, prealloc_gib=args.prealloc_gb, max_total_tokens=args.max_total_tokens,
                       watchdog_timeout=args.watchdog_timeout, disaggregation_mode=args.disaggregation_mode,
                       enable_symm_mem=args.enable_symm_mem, nnodes=args.nnodes, pp_size=args.pp_size)
    return run(as_json=args.json, check=args.check, nccl=args.nccl, shape=shape, ranks=args.ranks or None,
               want_ranks=args.ranks is not None)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds from above 0 to 86400")
    return value


def _nccl_version(text: str) -> str:
    from ..engine.nccl_policy import NcclVersion

    try:
        return str(NcclVersion.parse(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not an NCCL version (write it as 2.27.7)") from None


def _world(text: str) -> int:
    value = _positive(text)
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"{text!r}: the rehearsal runs 2 to 8 processes")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sglang-cp-symm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_status = sub.add_parser("status", help="what the plugin does on the installed sglang")
    p_status.add_argument("--json", action="store_true")
    p_status.add_argument("--apply", action="store_true", help="apply in this process and import the targets")
    p_status.set_defaults(func=_status)
    p_demo = sub.add_parser("demo", help="the installed release's real CP all-gathers across CPU processes: plugin "
                                         "off, on, and on with send staging, every target and branch")
    p_demo.add_argument("--world", "--cp-size", dest="world", type=_world, default=4,
                        help="processes (2-8; CP groups of 2 up to this size, 2, 3 and the size above 4)")
    p_demo.add_argument("--rounds", type=_positive, default=1, help="calls per target and branch (new random shares)")
    p_demo.add_argument("--as-nccl", default=None, type=_nccl_version,
                        help="judge the NCCL policy as for this version (default: the one the release's torch pins)")
    p_demo.add_argument("--every", action="store_true",
                        help="also: send staging where it engages (as NCCL 2.27.7), and the race opt-in where the "
                             "pinned NCCL is racy")
    p_demo.set_defaults(func=_demo)
    p_warm = sub.add_parser("demo-warmup", help="what the warm-up sends, from a real sglang command line (no GPU)")
    p_warm.add_argument("sglang_args", nargs=argparse.REMAINDER,
                        help="after --: the arguments of sglang serve (add --device cpu on a machine without CUDA)")
    p_warm.set_defaults(func=_demo_warmup)
    p_doctor = sub.add_parser("doctor", help="what will happen on this machine's sglang and NCCL")
    p_doctor.add_argument("--json", action="store_true")
    p_doctor.add_argument("--check", action="store_true",
                          help="exit 1 when the plugin is on but patches nothing or engages no symmetric kernel")
    p_doctor.add_argument("--nccl", default=None, help="judge as if this NCCL were loaded (e.g. 2.30.7)")
    sizing = p_doctor.add_argument_group("warm-up and pool sizing: the server's arguments, as given to sglang")
    sizing.add_argument("--cp-size", "--attn-cp-size", dest="cp_size", type=_positive, default=1)
    sizing.add_argument("--chunked-prefill-size", type=int, default=None,
                        help="as given to sglang (-1: chunking off); sglang's default is 8192 on H100/H200")
    sizing.add_argument("--context-length", type=_positive, default=None)
    sizing.add_argument("--page-size", type=_positive, default=1)
    sizing.add_argument("--tp-size", "--tp", dest="tp_size", type=_positive, default=1)
    sizing.add_argument("--dp-size", "--dp", dest="dp_size", type=_positive, default=1)
    sizing.add_argument("--enable-dp-attention", action="store_true")
    sizing.add_argument("--nnodes", type=_positive, default=1, help="nodes the server spans (CP groups across nodes "
                        "cannot use symmetric kernels)")
    sizing.add_argument("--pp-size", "--pp", dest="pp_size", type=_positive, default=1)
    sizing.add_argument("--model", default=None,
                        help=f"a preset ({', '.join(PRESETS)}), a config.json or a model folder holding one")
    sizing.add_argument("--kv-dtype", default="bf16", help="the KV cache dtype (bf16, fp8_e4m3, ...)")
    sizing.add_argument("--prealloc-gb", type=float, default=None,
                        help="SGLANG_SYMM_MEM_PREALLOC_GB_SIZE (default: the environment's, else sglang's 4)")
    sizing.add_argument("--max-total-tokens", type=_positive, default=None,
                        help="the KV pool of one DP rank in tokens (default: larger than the context, as a memory "
                             "profile on a large GPU gives); with pages > 6 tokens it can bound the longest prompt")
    sizing.add_argument("--watchdog-timeout", type=_positive_seconds, default=None,
                        help="sglang's --watchdog-timeout (default 300): the warm-up's deadline is at least 1.5x it")
    sizing.add_argument("--enable-symm-mem", action="store_true",
                        help="the server runs with symmetric memory: on a racy NCCL --check then exits 1")
    sizing.add_argument("--disaggregation-mode", choices=("null", "prefill", "decode"), default="null",
                        help="a PD prefill server gets sglang's 1800 s warm-up budget; decode runs no warm-up")
    p_doctor.add_argument("--ranks", nargs="?", const="", default=None, metavar="DIR",
                          help="show the last launch's per-rank records (default folder: SGLANG_CP_SYMM_REPORT_DIR)")
    p_doctor.set_defaults(func=_doctor)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

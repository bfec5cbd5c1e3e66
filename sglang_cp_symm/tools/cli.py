"""Command line (also ``python -m sglang_cp_symm``): ``doctor``, ``status``, ``demo``, ``demo-warmup``.

Patch generation is a maintainer's tool, not in the wheel: ``python -m maint.patches`` from a checkout.

Every command runs under whatever switches the user exported (README's "Switches", set for the
server). ``status`` and ``doctor`` report them as they are; the two demos build their own
configurations and so take the switches out of their own process first (``set_aside_switches``),
before anything of the engine is imported: from then on neither the ``.pth`` bootstrap (0.5.6-0.5.10,
at the first engine import) nor the ranks the demo forks can see them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .model_presets import PRESETS


def _status(args) -> int:
    """What the plugin does here. ``--apply`` decides on/off exactly as the engine does (a bad value is off)."""
    from .. import status
    from ..engine.plugin import activate
    from ..engine.settings import read_settings
    from ..releases import installed_build

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
    build = installed_build()
    report["sglang"] = None if build is None else build.shown
    report["imports"] = imports
    if not args.apply:
        if settings.enabled:  # the engine's words would describe an empty register, not this release
            report["outcome"] = "not applied in this process"
        report["note"] = "nothing applied in this process; pass --apply to patch and import the targets here"
    elif not settings.enabled:
        report["note"] = "the plugin is off (SGLANG_CP_SYMM is not on), so --apply applied nothing"
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    shown = "not installed" if report["sglang"] is None else report["sglang"] or "''"  # '': a version, but empty
    print(f"sglang: {shown}   mode: {report['mode']}   outcome: {report['outcome']}")
    print(f"  switches: {switches_text(settings)}")
    for problem in list(settings.problems) + ([build.problem] if build is not None and build.problem else []):
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


def switches_text(settings) -> str:
    """The switches as the engine parsed them (``read_settings``), one line: what status says is what runs."""
    def word(value) -> str:
        return {True: "on", False: "off", None: "auto"}.get(value, str(value))

    described = settings.describe()
    return ", ".join(f"{name}={word(described[name])}" for name in described if name != "problems")


def set_aside_switches(command: str, instead: str) -> list:
    """Take the user's switches out of this process before a demo imports the engine; say once which.

    The demos set the plugin themselves (``demo``: off, on, on with send staging, ...; ``demo-warmup``:
    on with the defaults). The user's switches would otherwise reach them three ways: the ``.pth``
    bootstrap applies the plugin from ``os.environ`` at the first engine import (0.5.6-0.5.10), the
    settings a configuration does not set are read from it (``Plugin.settings``), and the ranks
    the demo forks inherit it; strict mode would even stop the demo. Removing the variables here
    (names only are printed: no value is echoed) closes all three; a plugin applied already in
    this process (only if something imported the engine before) is taken back. ``instead`` says what
    the command runs with. Returns the names.
    """
    from ..engine.settings import ENABLE

    # SGLANG_CP_SYMM and every SGLANG_CP_SYMM_* (the switches and the launch id): a switch added later is covered too
    names = sorted(name for name in os.environ if name == ENABLE or name.startswith(ENABLE + "_"))
    for name in names:
        os.environ.pop(name, None)
    if "sglang_cp_symm.engine.activation" in sys.modules:
        from ..engine.activation import current

        applied = current()
        if applied is not None and applied.active:
            applied.unapply()
    if names:
        print(f"sglang-cp-symm {command}: set aside {', '.join(names)} from this process's environment; "
              f"{instead}, whatever the environment says")
        sys.stdout.flush()
    return names


def import_register_modules() -> dict:
    """Import every module the register names for this release, as a scheduler would; {module: what happened}
    (``rehearsal.import_modules``)."""
    from ..engine.activation import current
    from ..targets import POOL_FIX, targets_for
    from .rehearsal import import_modules

    applied = current()
    if applied is None or applied.patcher.release is None:
        return {}
    return import_modules(sorted({t.module for t in targets_for(applied.patcher.release)} | {POOL_FIX.module}))


def _demo(args) -> int:
    set_aside_switches("demo", "it sets the plugin itself in each configuration below")
    from .proof_report import run_demo

    return run_demo(world=args.world, rounds=args.rounds, send=args.send, nccl=args.as_nccl, every=args.every)


def _demo_warmup(args) -> int:
    set_aside_switches("demo-warmup", "it runs the plugin on, every other switch at its default")
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
    return run(as_json=args.json, check=args.check, nccl=args.nccl, shape=shape, ranks=args.ranks)


def _positive(text: str) -> int:
    value = int(text) if text.isascii() and text.strip().isdigit() and len(text) <= 18 else 0  # [0-9] only
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a positive whole number")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() and len(text) <= 32 else 0.0
    except ValueError:
        value = 0.0
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds from above 0 to 86400")
    return value


def _nccl_version(text: str) -> str:
    """A released NCCL's version as X.Y.Z (``nccl_policy.given_version``: read, and judged plausible)."""
    from ..engine.nccl_policy import given_version

    try:
        return str(given_version(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _world(text: str) -> int:
    value = _positive(text)
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"{text!r}: the rehearsal runs 2 to 8 processes")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (what was wrong, where help is) and exit status 2, without the
    usage block, and never echoes more than a short prefix of the value."""

    def error(self, message: str):
        message = message if len(message) <= 240 else message[:240] + "..."
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # an undecodable byte in a path or a value is printed escaped
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # pragma: no cover - a replaced stream without reconfigure
            pass
    parser = _Parser(prog="sglang-cp-symm", description=__doc__)
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
    p_demo.add_argument("--send", action=argparse.BooleanOptionalAction, default=True,
                        help="the configuration with send staging (SGLANG_CP_SYMM_SEND=1); on unless --no-send")
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
    p_doctor.add_argument("--nccl", default=None, type=_nccl_version, help="judge as if this NCCL were loaded (e.g. 2.30.7)")
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

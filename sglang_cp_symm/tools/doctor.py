"""``sglang-cp-symm doctor``: what will happen on this machine's exact versions, before a deployment.

Works without a GPU and without sglang (it says so). It never imports sglang: the
release is read from its metadata and each target from its source file, so the
report is safe to run anywhere, next to a running server too.
"""

from __future__ import annotations

import json
import os
import site
import sysconfig
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from .. import __version__
from ..engine.nccl_library import engine_nccl, torch_built_with
from ..engine.nccl_policy import NcclVersion, given_version, line_for, upgrade_command
from ..engine.plan import Facts, Plan, State, gather_facts, make_plan, outcome as plan_outcome
from ..engine.settings import (ALLOW_NCCL_RACE, ENABLE, SEND, STRICT, WARMUP, WARMUP_TIMEOUT, WARMUP_TOKENS, WATCHDOG,
                               Settings, read_settings)
from ..engine.allocator_model import (
    PREALLOC_VARIABLE,
    capped_words,
    pool_words,
    prealloc_gib_from,
    shape_from_config,
    size_pool,
    sizing_fields,
)
from ..engine.scheduler_rules import (
    REFERENCE_CHUNK,
    SizingError,
    attention_tp_size,
    context_from_config,
    far_above_message,
    longest_forward,
    per_dp_chunk,
    whence_words,
)
from ..engine.warmup import nothing_to_warm, switched_off
from ..engine.warmup_fanout import sglang_warmup_timeout, warmup_deadline
from ..pins import pin_for
from ..releases import Build, distribution_version, installed_build
from .model_presets import load_config

ENTRY_POINT = "cp_symm"
BOOTSTRAP = "sglang_cp_symm_bootstrap.pth"


def _entry_point() -> dict:
    eps = metadata.entry_points(group="sglang.srt.plugins")
    ours = [ep for ep in eps if ep.name == ENTRY_POINT]
    wanted = os.environ.get("SGLANG_PLUGINS", "")  # as sglang's load_plugins reads it (plugins/__init__.py 0.5.23
    # lines 51-55): any non-empty value is an allow-list, " , " an empty one that loads no plugin at all
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    return {"discoverable": bool(ours), "value": ours[0].value if ours else None,
            "SGLANG_PLUGINS": wanted or None, "filtered_out": bool(wanted) and ENTRY_POINT not in names}


def _bootstrap_installed() -> bool:
    dirs = set(site.getsitepackages() if hasattr(site, "getsitepackages") else []) | {sysconfig.get_paths()["purelib"]}
    return any((Path(d) / BOOTSTRAP).is_file() for d in dirs)


def nccl_as_the_engine_loads_it():
    """The engine's NCCL, by the runtime's own function (``engine_nccl``), after torch is imported as the engine
    imports it; with no torch here, unknown (and nothing is opened)."""
    try:
        import torch  # noqa: F401  (the engine imports torch before its pynccl opens libnccl)
    except Exception as exc:
        return None, f"torch does not import here ({type(exc).__name__})"
    return engine_nccl()


def _gpu() -> dict:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"available": True, "name": torch.cuda.get_device_name(), "capability": f"{major}.{minor}"}
    except Exception:
        pass
    return {"available": False}


@dataclass(frozen=True)
class ServeShape:
    """The server arguments that decide the warm-up and the pool size, as given to ``sglang serve``."""

    cp_size: int = 1
    chunked_prefill_size: Optional[int] = None
    context_length: Optional[int] = None
    page_size: int = 1
    tp_size: int = 1
    dp_size: int = 1
    enable_dp_attention: bool = False
    model: Optional[str] = None
    kv_dtype: str = "bf16"
    prealloc_gib: Optional[float] = None
    max_total_tokens: Optional[int] = None  # one DP rank's KV pool (--max-total-tokens); None: the memory profile's
    watchdog_timeout: Optional[float] = None  # --watchdog-timeout; None: sglang's 300 s
    enable_symm_mem: bool = False  # --enable-symm-mem: symmetric memory is on for every group that uses the pool
    nnodes: int = 1  # --nnodes: the CP groups' place on nodes (``topology``)
    pp_size: int = 1
    disaggregation_mode: str = "null"

    @property
    def given(self) -> bool:
        return self.cp_size > 1 or self.chunked_prefill_size is not None or self.model is not None


def sizing_report(shape: ServeShape, release, settings, send: bool = False) -> dict:
    """The warm-up sglang-cp-symm will run and the pool the CP all-gathers need, for one set of server arguments.

    The same functions as the running warm-up (``scheduler_rules.longest_forward``, ``allocator_model.size_pool``,
    ``warmup_deadline``), given the command line's values instead of the server's resolved ones; ``send``: the
    plan stages the send buffers too.
    """
    out: dict = {"given": asdict(shape)}
    nothing = nothing_to_warm(shape.disaggregation_mode, True, shape.cp_size)
    if nothing:
        out["warmup"] = f"none: {nothing}"
        return out
    skipped = switched_off(settings.enabled, settings.warmup, shape.enable_symm_mem)
    if skipped:  # the figures below are still what it would send with the switch on
        out["skipped"] = skipped
    config = None
    if shape.model is not None:
        try:
            config = load_config(shape.model)
        except SizingError as exc:
            out["error"] = str(exc)
            return out
    context = shape.context_length
    out["context_source"] = "--context-length" if context else None
    if context is None and config is not None:
        context = context_from_config(config)
        out["context_source"] = "the model's max_position_embeddings" if context else None
    given_chunk = REFERENCE_CHUNK if shape.chunked_prefill_size is None else shape.chunked_prefill_size
    chunk = per_dp_chunk(given_chunk, shape.dp_size, shape.enable_dp_attention)
    pool = None if shape.max_total_tokens is None else shape.max_total_tokens // shape.page_size * shape.page_size
    try:
        forward = longest_forward(chunk, shape.page_size, context_len=context, pool_tokens=pool, release=release,
                                  override=settings.warmup_tokens)
    except SizingError as exc:
        out["error"] = str(exc)
        return out
    deadline = warmup_deadline(settings.warmup_timeout_s, sglang_warmup_timeout(os.environ), shape.watchdog_timeout,
                               shape.disaggregation_mode)
    out.update(chunk_is_default=shape.chunked_prefill_size is None, per_dp_chunk=chunk, context_length=context,
               pool_tokens=pool, longest_forward=forward.describe(), max_extend=forward.tokens,
               longest_prompt=forward.prompt, deadline=deadline.describe(), warnings=[])
    warning = far_above_message(forward)
    if warning:
        out["warnings"].append(warning)
    if config is None:
        out["note"] = "pass --model (a preset or a config.json) to size the buffers and the short prompts"
        return out
    attn_tp = attention_tp_size(shape.tp_size, shape.dp_size if shape.enable_dp_attention else 1, shape.cp_size)
    try:
        model = shape_from_config(config, shape.kv_dtype, attn_tp, str(shape.model))
    except SizingError as exc:
        out["error"] = str(exc)
        return out
    prealloc = (shape.prealloc_gib if shape.prealloc_gib is not None
                else prealloc_gib_from(os.environ.get(PREALLOC_VARIABLE)))
    sized = size_pool(forward, shape.cp_size, model, send, release, prealloc, settings.enabled)
    out["short_prompts"] = list(sized.short_prompts)
    out["prompts"] = [forward.prompt] + out["short_prompts"]
    out["row_bytes"] = dict(model.gathers)
    out.update(sizing_fields(sized))
    out["pool_words"] = pool_words(sized)
    capped = capped_words(forward, sized, settings.watchdog)
    if capped:
        out["capped"] = capped
    return out


def topology_report(shape: ServeShape) -> dict:
    """Whether the server's CP groups can run symmetric kernels here (``topology``), as data."""
    from .topology import TopologyError, cp_groups, judge, read_topology

    try:
        groups = cp_groups(shape.tp_size, shape.cp_size, shape.dp_size if shape.enable_dp_attention else 1,
                           shape.pp_size)
        links, where = read_topology()
        verdict = judge(groups, shape.nnodes, links, where)
    except TopologyError as exc:
        return {"state": "invalid", "message": str(exc), "groups": []}
    return {"state": verdict.state, "message": verdict.message, "groups": [list(g) for g in verdict.groups[:8]]}


def ranks_report(folder: Optional[str]) -> dict:
    """The latest server launch's per-rank records (warm-up, growths) and what comparing them shows."""
    from ..engine.watchdog import compare_ranks, read_run, report_dir

    run = read_run(folder or report_dir())
    if run is None:
        return {"folder": folder or report_dir(), "run": None, "ranks": {}, "findings": [],
                "note": "no rank records here: a server with SGLANG_CP_SYMM=1 writes them after its warm-up "
                        "(SGLANG_CP_SYMM_REPORT_DIR sets the folder)"}
    ranks = {name: {"phase": r.get("phase"), "warmup": r.get("warmup"), "growths": r.get("growths"),
                    "growths_after_warmup": r.get("growths_after_warmup"), "pools": r.get("pools"),
                    "last_growths": r.get("events", [])[-3:]} for name, r in run["ranks"].items()}
    return {"folder": run["folder"], "run": run["run"], "ranks": ranks, "findings": compare_ranks(run)}


@dataclass(frozen=True)
class ProcessFacts:
    """What the doctor reads of this machine, as the engine reads it, and the plan made from it."""

    settings: Settings
    build: Optional[Build]
    loaded: Optional[NcclVersion]
    loaded_from: str
    nccl: Optional[NcclVersion]  # the loaded one, or the one given with --nccl
    gpu: dict
    facts: Facts
    plan: Plan


def read_process_facts(nccl_override: Optional[str] = None) -> ProcessFacts:
    """The facts of this process, gathered as the engine gathers them (``plan.gather_facts``), and their plan."""
    settings = read_settings()
    build = installed_build()
    loaded, loaded_from = nccl_as_the_engine_loads_it()
    nccl = given_version(nccl_override) if nccl_override else loaded
    gpu = _gpu()
    capability = tuple(int(p) for p in gpu["capability"].split(".")) if gpu["available"] else None
    facts = gather_facts(settings, build, nccl=nccl, nccl_from="given with --nccl" if nccl_override else loaded_from,
                         gpu=capability)
    return ProcessFacts(settings, build, loaded, loaded_from, nccl, gpu, facts, make_plan(facts))


def build_report(nccl_override: Optional[str] = None, shape: Optional[ServeShape] = None,
                 ranks: Optional[str] = None) -> dict:
    """The doctor's report: the plan (``engine.plan``) made from this machine's facts, gathered as the engine
    gathers them, and rendered; nothing here decides what happens to a target. ``ranks``: the folder of the
    per-rank records to read ("" the default one; None: none read)."""
    seen = read_process_facts(nccl_override)
    report = _header(seen, nccl_override)
    findings = report["findings"]
    release = None if seen.build is None else seen.build.release
    if seen.build is not None and seen.build.problem:
        findings.append(seen.build.problem)
        return report
    if release is None:
        findings.append("sglang is not installed in this environment: nothing to patch; install the plugin next to sglang")
        return report
    report["supported"] = seen.plan.problem is None
    if seen.plan.problem is not None:
        findings.append(f"sglang {seen.build.shown}: {seen.plan.problem}; the plugin will change nothing")
        return report
    findings.extend(_loading_findings(report, release))
    if seen.nccl is None:
        findings.append(f"no NCCL found here ({seen.loaded_from}): the verdict below cannot say whether the symmetric "
                        "kernel engages")
    report["pins"] = pins_report(release, seen.loaded, seen.nccl, findings)
    _add_plan(report, seen, symm_mem=shape is not None and shape.enable_symm_mem)
    actions = list(seen.plan.recommended())
    if shape is not None:
        _add_shape(report, shape, seen, actions)
    if ranks is not None:
        report["ranks"] = ranks_report(ranks)
        findings.extend(f"ranks: {f}" for f in report["ranks"]["findings"])
        if "note" in report["ranks"]:
            findings.append(report["ranks"]["note"])
    report["recommended"] = actions
    report["changes_something"] = seen.plan.changes_something()
    report["engages_kernel"] = seen.plan.engages_kernel()
    return report


def _header(seen: ProcessFacts, nccl_override: Optional[str]) -> dict:
    """The versions, the GPU, the NCCL, the switches and how the plugin is found: what every report starts with."""
    torch_nccl = torch_built_with()
    return {
        "sglang_cp_symm": __version__,
        "sglang": None if seen.build is None else seen.build.shown,
        "sglang_build": None if seen.build is None else {"final": seen.build.final, "kind": seen.build.kind},
        "torch": distribution_version("torch"),
        "gpu": seen.gpu,
        "nccl": {"torch_build": None if torch_nccl is None else str(torch_nccl),
                 "loaded": None if seen.loaded is None else str(seen.loaded), "loaded_from": seen.loaded_from,
                 "used_for_verdict": None if seen.nccl is None else str(seen.nccl), "given": nccl_override},
        "switches": {name: os.environ.get(name) for name in (ENABLE, STRICT, SEND, ALLOW_NCCL_RACE, WARMUP,
                                                              WARMUP_TOKENS, WARMUP_TIMEOUT, WATCHDOG)},
        "settings": seen.settings.describe(),
        "entry_point": _entry_point(),
        "bootstrap_pth": _bootstrap_installed(),
        "targets": {},
        "findings": list(seen.settings.problems),
    }


def _loading_findings(report: dict, release) -> list:
    """Whether sglang will load the plugin: the entry point (0.5.11+) or the ``.pth`` bootstrap (earlier)."""
    if release >= (0, 5, 11):
        if not report["entry_point"]["discoverable"]:
            return ["the entry point cp_symm is not installed: reinstall sglang-cp-symm in this environment"]
        if report["entry_point"]["filtered_out"]:
            return ["SGLANG_PLUGINS does not list cp_symm: sglang will not load the plugin"]
        return []
    if not report["bootstrap_pth"]:
        return [f"sglang {release} has no plugin framework and {BOOTSTRAP} is not in site-packages"]
    return []


def _add_plan(report: dict, seen: ProcessFacts, symm_mem: bool) -> None:
    """The plan's sections: the policy and outcome, the race guard and exposure, every target and the pool fix."""
    plan, settings, findings = seen.plan, seen.settings, report["findings"]
    report["nccl_env"] = [{"name": e.name, "value": e.value[:40], "effect": e.effect} for e in seen.facts.nccl_env]
    if settings.enabled:
        report["policy"] = {"line": plan.decision.line(), "source": plan.decision.source}
        report["outcome"] = plan_outcome([(t.name, t.state, t.words) for t in plan.entries()],
                                         plan.guard.reason if plan.guard.engaged else None)
    guard = plan.guard
    report["race_guard"] = {**guard.describe(), "plugin_on": settings.enabled}
    if guard.engaged and not settings.enabled:
        fix = "" if plan.exposure else f", or {guard.fix}"  # the exposure's finding below gives the fix
        findings.append(f"race: {guard.reason.split(':', 1)[0]} and the plugin is off, so nothing keeps this "
                        f"release's own CP/DCP all-gathers off them (with --enable-symm-mem); {ENABLE}=1 engages the "
                        f"race guard{fix}")
    if guard.defeated_by:
        findings.append(f"race guard not held: {guard.defeated_by}")
    findings.extend(plan.notes)
    report["symm_mem"] = symm_mem
    report["race_exposure"] = plan.exposure
    if plan.exposure:  # the race and its fix, said once: the pins' line below only where this one is not said
        findings.append(f"race: {plan.exposure}" if symm_mem else
                        f"race, if the server runs with --enable-symm-mem (pass it here to judge that): {plan.exposure}")
    elif report["pins"].get("fix"):
        findings.append(f"NCCL {seen.nccl} has the symmetric-kernel race of sm90+ (Hopper and Blackwell; "
                        f"2.28.0-2.30.6): {report['pins']['fix']}")
    for entry in plan.targets:
        report["targets"][entry.name] = {"where": entry.where, "source": entry.source, "state": str(entry.state),
                                         "words": entry.words, "action": str(entry.action),
                                         **entry.verdict(), "hazard": entry.hazard,
                                         "action_to_take": entry.action_to_take}
        if entry.state == State.SKIPPED:
            findings.append(f"{entry.where}: the installed source is of another shape ({entry.detail}): the "
                            "plugin will leave it alone")
        if entry.hazard:
            findings.append(f"{entry.name}: {entry.hazard}")
    report["pool_fix"] = None if plan.pool is None else {"state": str(plan.pool.state), "words": plan.pool.words,
                                                         "source": plan.pool.source}


def _add_shape(report: dict, shape: ServeShape, seen: ProcessFacts, actions: list) -> None:
    """For the server's shape (``--tp``, ``--cp``, ``--model``...): the warm-up's sizing and the topology."""
    findings, settings = report["findings"], seen.settings
    if shape.given:
        report["sizing"] = sizing_report(shape, seen.build.release, settings,
                                         send=bool(settings.enabled and seen.plan.decision.stage_send))
        if report["sizing"].get("prealloc", {}).get("state") == "too-small":
            actions.append(report["sizing"]["prealloc"]["message"])
        if "error" in report["sizing"]:
            findings.append(f"sizing: {report['sizing']['error']}")
        findings.extend(f"warm-up: {w}" for w in report["sizing"].get("warnings", ()))
    if shape.cp_size > 1:
        report["topology"] = topology_report(shape)
        if report["topology"]["state"] not in ("ok", "unknown", "no CP"):
            findings.append(f"topology: {report['topology']['message']}")


def pins_report(release, loaded: Optional[NcclVersion], nccl: Optional[NcclVersion], findings: list) -> dict:
    """What the release pins (torch, and torch's NCCL), what is loaded, and the fix for a racy line."""
    pin = pin_for(release)
    if pin is None:
        return {"known": False}
    out = {"known": True, "torch": pin.torch, "nccl": pin.nccl, "nccl_wheel": pin.nccl_wheel,
           "loaded": None if loaded is None else str(loaded),
           "differs": loaded is not None and str(loaded) != pin.nccl}
    if out["differs"]:
        findings.append(f"NCCL {loaded} is loaded, not the {pin.nccl} that sglang {release}'s torch {pin.torch} pins")
    if nccl is not None and line_for(nccl).race:
        out["fix"] = upgrade_command(release)  # said by the race's finding (``_add_plan``), once
    return out


def check_failed(report: dict) -> bool:
    """For --check: the plugin is on but the plan changes nothing or engages no symmetric kernel, a switch is
    bad, the NCCL races while the server's symmetric memory is on (``--enable-symm-mem``, plugin on or off), a CP
    group cannot run symmetric kernels on this topology (``topology``), or
    (with --ranks) the last launch's ranks grew after the warm-up or hold uneven pools."""
    if report["settings"]["problems"]:
        return True
    if report.get("ranks", {}).get("findings"):
        return True
    if report.get("race_exposure") and report.get("symm_mem"):  # racy kernels in every group using the pool
        return True
    if report.get("topology", {}).get("state") in ("spans nodes", "no all-NVLink path", "invalid"):
        return True
    if not report["settings"]["enabled"]:
        return False
    return not (report.get("changes_something") and report.get("engages_kernel"))


def render(report: dict) -> str:
    out = [f"sglang-cp-symm {report['sglang_cp_symm']} doctor",
           f"  sglang      {'not installed' if report['sglang'] is None else report['sglang'] or repr('')}",
           f"  torch       {report['torch'] or 'not installed'}",
           f"  GPU         {report['gpu'].get('name', 'none visible')} {report['gpu'].get('capability', '')}".rstrip()]
    n = report["nccl"]
    nccl_line = f"  NCCL        {n['used_for_verdict'] or 'unknown'}"
    if n["given"]:
        nccl_line += " (given with --nccl)"
    elif n["torch_build"] and n["loaded"] and n["torch_build"] != n["loaded"]:
        nccl_line += f" (libnccl loaded from {n['loaded_from']}; torch was built with {n['torch_build']})"
    out.append(nccl_line)
    ep = report["entry_point"]
    out.append(f"  entry point {'found' if ep['discoverable'] else 'missing'}"
               + (f", SGLANG_PLUGINS={ep['SGLANG_PLUGINS']!r}" if ep["SGLANG_PLUGINS"] else "")
               + (" (filters it out)" if ep["filtered_out"] else ""))
    out.append(f"  .pth        {'installed' if report['bootstrap_pth'] else 'not installed'} (used by sglang < 0.5.11)")
    s = report["settings"]
    out.append(f"  switches    {ENABLE}={'on' if s['enabled'] else 'off'}, STRICT={'on' if s['strict'] else 'off'}, "
               f"SEND={'on' if s['send'] else 'off'}, ALLOW_NCCL_RACE={'on' if s['allow_nccl_race'] else 'off'}, "
               f"WARMUP={'on' if s['warmup'] else 'off'}"
               + _warmup_switch_details(s)
               + f", WATCHDOG={'on' if s['watchdog'] else 'off'}")
    if report["targets"]:
        out.append("  CP all-gathers on this release (state: what the engine will report):")
        out.append(f"    {'target':<30} {'source':<12} {'state':<12} {'output in CP window':<20} {'send in window':<15} "
                   "symmetric kernel")
        for name, t in report["targets"].items():
            kernel = {True: "yes", False: "no", None: "unknown"}[t["kernel"]]
            if t["state"] == "guarded":
                kernel = "no (race guard)"
            out.append(f"    {name:<30} {t['source']:<12} {t['state']:<12} {'yes' if t['output_in_window'] else 'no':<20} "
                       f"{'yes' if t['send_in_window'] else 'no':<15} {kernel}")
    if report.get("outcome"):
        out.append(f"  outcome     {report['outcome']}")
    pins = report.get("pins")
    if pins and pins.get("known"):
        out.append(f"  pins        torch {pins['torch']}, NCCL {pins['nccl']} ({pins['nccl_wheel']}); loaded "
                   f"{pins['loaded'] or 'unknown'}" + (" (differs)" if pins["differs"] else ""))
    for effect in report.get("nccl_env", []):
        out.append(f"  NCCL env    {effect['name']}={effect['value']}: {effect['effect']}")
    guard = report.get("race_guard")
    if guard:
        state = "engaged" if guard["engaged"] and guard["plugin_on"] else (
            "would engage (plugin off)" if guard["engaged"] else "not engaged")
        out.append(f"  race guard  {state}: {guard['reason']}")
    if "policy" in report:
        out.append(f"  policy      {report['policy']['line']}")
    if report.get("topology"):
        out.append(f"  topology    {report['topology']['state']}: {report['topology']['message']}")
    out.extend(_render_sizing(report.get("sizing")))
    out.extend(_render_ranks(report.get("ranks")))
    for finding in report["findings"]:
        out.append(f"  ! {finding}")
    for action in report.get("recommended", []):
        out.append(f"  -> {action}")
    return "\n".join(out)


def _warmup_switch_details(settings: dict) -> str:
    details = [f"{settings['warmup_tokens']} tokens" if settings["warmup_tokens"] else "",
               f"deadline {settings['warmup_timeout_s']} s" if settings.get("warmup_timeout_s") else ""]
    details = [d for d in details if d]
    return f" ({', '.join(details)})" if details else ""


def _render_sizing(sizing: Optional[dict]) -> list:
    if not sizing:
        return []
    lines = ["  warm-up and pool (per DP rank):"]
    if "warmup" in sizing:
        return lines + [f"    {sizing['warmup']}"]
    if "error" in sizing:
        return lines + [f"    cannot size: {sizing['error']}"]
    fwd = sizing["longest_forward"]
    default = ", sglang's default on an H100 or H200" if sizing["chunk_is_default"] and fwd["chunk"] > 0 else ""
    source = whence_words(fwd, fwd["source"] + default)
    context = (f"; context {sizing['context_length']} from {sizing['context_source']}"
               if sizing.get("context_source") and fwd["chunk"] <= 0 else "")
    if sizing.get("skipped"):
        lines.append(f"    skipped           {sizing['skipped']}: the engine sends none of this; with it on:")
    lines.append(f"    longest forward   {fwd['tokens']} tokens ({source}{context})")
    if "note" in sizing:
        lines.append(f"    {sizing['note']}")
    else:
        short = sizing["short_prompts"]
        then = f", then {', '.join(map(str, short))}" if short else ""
        lines.append(f"    prompts           {fwd['prompt']}{then} tokens (the short ones fill the 2 MiB small segments)")
        lines.append(f"    CP buffers        {sizing['pool_words']}")
        if sizing.get("capped"):
            lines.append(f"    capped            {sizing['capped']}")
    deadline = sizing["deadline"]
    lines.append(f"    deadline          {deadline['seconds']:g} s ({deadline['source']}); the start waits at most "
                 f"{deadline['bound_s']:g} s, then serves (strict mode: refuses to start)")
    if "prealloc" in sizing:
        lines.append(f"    pre-allocation    {sizing['prealloc']['state']}: {sizing['prealloc']['message']}")
    return lines


def _render_ranks(ranks: Optional[dict]) -> list:
    if not ranks:
        return []
    lines = [f"  ranks of the last launch ({ranks['folder']}):"]
    if not ranks.get("ranks"):
        lines.append("    none recorded")
    for name, r in sorted((ranks.get("ranks") or {}).items()):
        w = r.get("warmup") or {}
        segments = sum(p.get("segments", 0) for p in (r.get("pools") or {}).values())
        lines.append(f"    {name:<28} warm-up {w.get('prompts') or '-'} in {w.get('seconds', 0):.2f} s, "
                     f"{segments} segment(s), {r.get('growths_after_warmup') or 0} growth(s) after warm-up")
    return lines


def run(as_json: bool, check: bool, nccl: Optional[str], shape: Optional[ServeShape] = None,
        ranks: Optional[str] = None) -> int:
    report = build_report(nccl, shape, ranks)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 1 if check and check_failed(report) else 0

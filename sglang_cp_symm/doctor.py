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
from importlib import metadata
from pathlib import Path
from typing import Optional

from . import __version__
from .nccl_policy import NcclVersion, decide, loaded_nccl_version, torch_nccl_version
from .settings import ALLOW_NCCL_RACE, ENABLE, SEND, STRICT, read_settings
from .source_survey import installed_reader, survey
from .targets import FIRST_SUPPORTED, LAST_SUPPORTED, POOL_FIX, TARGETS, is_supported
from .verdict import verdict
from .versions import distribution_version, installed_sglang

ENTRY_POINT = "cp_symm"
BOOTSTRAP = "sglang_cp_symm_bootstrap.pth"


def _entry_point() -> dict:
    try:
        eps = metadata.entry_points(group="sglang.srt.plugins")
    except TypeError:  # pragma: no cover - Python < 3.10
        eps = metadata.entry_points().get("sglang.srt.plugins", [])
    ours = [ep for ep in eps if ep.name == ENTRY_POINT]
    wanted = os.environ.get("SGLANG_PLUGINS", "")
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    return {"discoverable": bool(ours), "value": ours[0].value if ours else None,
            "SGLANG_PLUGINS": wanted or None, "filtered_out": bool(names) and ENTRY_POINT not in names}


def _bootstrap_installed() -> bool:
    dirs = set(site.getsitepackages() if hasattr(site, "getsitepackages") else []) | {sysconfig.get_paths()["purelib"]}
    return any((Path(d) / BOOTSTRAP).is_file() for d in dirs)


def _gpu() -> dict:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"available": True, "name": torch.cuda.get_device_name(), "capability": f"{major}.{minor}"}
    except Exception:
        pass
    return {"available": False}


def build_report(nccl_override: Optional[str] = None) -> dict:
    settings = read_settings()
    release = installed_sglang()
    torch_nccl = torch_nccl_version()
    loaded, loaded_from = loaded_nccl_version()
    nccl = NcclVersion.parse(nccl_override) if nccl_override else loaded or torch_nccl
    gpu = _gpu()
    sm90 = not gpu["available"] or float(gpu["capability"]) >= 9.0
    report = {
        "sglang_cp_symm": __version__,
        "sglang": None if release is None else distribution_version("sglang"),
        "torch": distribution_version("torch"),
        "gpu": gpu,
        "nccl": {"torch_build": None if torch_nccl is None else str(torch_nccl),
                 "loaded": None if loaded is None else str(loaded), "loaded_from": loaded_from,
                 "used_for_verdict": None if nccl is None else str(nccl), "given": nccl_override},
        "switches": {name: os.environ.get(name) for name in (ENABLE, STRICT, SEND, ALLOW_NCCL_RACE)},
        "settings": settings.describe(),
        "entry_point": _entry_point(),
        "bootstrap_pth": _bootstrap_installed(),
        "targets": {},
        "findings": [],
    }
    findings = report["findings"]
    for problem in settings.problems:
        findings.append(problem)
    if release is None:
        findings.append("sglang is not installed in this environment: nothing to patch; install the plugin next to sglang")
        return report
    report["supported"] = is_supported(release)
    if not report["supported"]:
        findings.append(f"sglang {release} is outside the register ({FIRST_SUPPORTED}..{LAST_SUPPORTED}): "
                        "the plugin will change nothing")
        return report
    if release >= (0, 5, 11):
        if not report["entry_point"]["discoverable"]:
            findings.append("the entry point cp_symm is not installed: reinstall sglang-cp-symm in this environment")
        elif report["entry_point"]["filtered_out"]:
            findings.append("SGLANG_PLUGINS does not list cp_symm: sglang will not load the plugin")
    elif not report["bootstrap_pth"]:
        findings.append(f"sglang {release} has no plugin framework and {BOOTSTRAP} is not in site-packages")
    if nccl is None:
        findings.append("no NCCL found here: the verdict below cannot say whether the symmetric kernel engages")
    states = survey(installed_reader(), release)
    for target in TARGETS:
        if not target.exists_in(release):
            continue
        source = states[target.name]
        v = verdict(release, target, nccl, settings, sm90)
        entry = {"where": target.dotted, "source": source["state"], "expected": source["expected"], **v.as_dict()}
        report["targets"][target.name] = entry
        if source["state"] != source["expected"]:
            findings.append(f"{target.dotted}: the installed file is {source['state']} ({source['detail']}), "
                            f"not {source['expected']}: the plugin will leave it alone")
        if v.hazard:
            findings.append(f"{target.name}: {v.hazard}")
    if settings.enabled:
        decision = decide(nccl, settings.send, settings.allow_nccl_race, sm90)
        report["policy"] = {"line": decision.line(), "source": decision.source}
    report["pool_fix"] = POOL_FIX.applies_to(release)
    actions = sorted({t["action"] for t in report["targets"].values() if t["action"]})
    report["recommended"] = actions
    return report


def check_failed(report: dict) -> bool:
    """For --check: the plugin is on but patches nothing or engages no symmetric kernel (or a switch is bad)."""
    if report["settings"]["problems"]:
        return True
    if not report["settings"]["enabled"]:
        return False
    targets = report["targets"].values()
    patches = any(t["patched_by_plugin"] for t in targets) or report.get("pool_fix", False)
    engages = any(t["kernel"] for t in targets)
    return not (patches and engages)


def render(report: dict) -> str:
    out = [f"sglang-cp-symm {report['sglang_cp_symm']} doctor",
           f"  sglang      {report['sglang'] or 'not installed'}",
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
               f"SEND={'on' if s['send'] else 'off'}, ALLOW_NCCL_RACE={'on' if s['allow_nccl_race'] else 'off'}")
    if report["targets"]:
        out.append("  CP all-gathers on this release:")
        out.append(f"    {'target':<30} {'source':<12} {'output in CP window':<20} {'send in window':<15} symmetric kernel")
        for name, t in report["targets"].items():
            kernel = {True: "yes", False: "no", None: "unknown"}[t["kernel"]]
            out.append(f"    {name:<30} {t['source']:<12} {'yes' if t['output_cp_registered'] else 'no':<20} "
                       f"{'yes' if t['send_registered'] else 'no':<15} {kernel}")
    if "policy" in report:
        out.append(f"  policy      {report['policy']['line']}")
    for finding in report["findings"]:
        out.append(f"  ! {finding}")
    for action in report.get("recommended", []):
        out.append(f"  -> {action}")
    return "\n".join(out)


def run(as_json: bool, check: bool, nccl: Optional[str]) -> int:
    report = build_report(nccl)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 1 if check and check_failed(report) else 0

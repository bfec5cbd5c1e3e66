"""One table per release, N, CP size and NCCL, from the ranks' files; and what it says about send staging.

Columns, per mode:
- ``identical``: cases whose result equalled the true concatenation (every rank rebuilds every rank's
  input), summed over ranks; bit-identity between modes follows, since every mode is compared with the
  same expected tensor;
- ``hang``: ``no``, or the step a rank was in when its deadline fired (or the rank's error);
- ``out in win`` / ``in in win``: of rank 0's sweep calls, how many handed the all-gather an output (input)
  buffer inside a symmetric window: inside the CP group's symmetric context (CPU recorder), or in the CP
  pool or sglang's shared pool (GPU); the table below it says, per gather, where: ``ctx`` (CPU), ``cp``,
  ``shared``, ``-`` outside (on 0.5.6-0.5.11 ``shared`` means registered with the TP communicator only);
- ``symk``: the share of the measured CP all-gathers that ran a symmetric kernel, from NCCL's log (``L``)
  and from the profiler trace (``T``); ``n/a`` where there is no NCCL (CPU) or no line (one rank);
- one column per latency size: the gather function's median time in microseconds, and ``/k`` the NCCL
  kernel's own median (trace), then the bus bandwidth ``(n-1)/n * bytes / time`` from the kernel time
  (else the function time);
- ``growths``: pool segments added after each size's warm-up, summed over ranks; ``segs/rank``.
"""

from __future__ import annotations

import glob
import json
import os
import re
from statistics import median
from typing import Any, Dict, List, Optional

from . import deadline as deadlines
from .sweep import LATENCY_MIB, REFERENCES

MODE_ORDER = ("unpatched", "output-only", "default", "send", "guard")


def load(folder: str) -> Dict[str, Any]:
    ranks: Dict[int, dict] = {}
    for path in glob.glob(os.path.join(folder, "rank*.json")):
        match = re.search(r"rank(\d+)\.json$", path)
        if match:
            with open(path) as f:
                ranks[int(match.group(1))] = json.load(f)
    progress = {}
    for path in glob.glob(os.path.join(folder, "rank*.progress")):
        match = re.search(r"rank(\d+)\.progress$", path)
        if match:
            progress[int(match.group(1))] = deadlines.last_step(path)
    return {"ranks": ranks, "progress": progress}


def _share(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


IN_WINDOW = ("context", "cp", "shared")


def _where(counts: Dict[str, int]) -> str:
    """``ctx``, ``cp``, ``shared``, ``-``; a mixture as ``ctx 3 - 2``."""
    if not counts:
        return "?"
    short = {"context": "ctx"}
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    if len(ordered) == 1:
        return short.get(ordered[0][0], ordered[0][0])
    return " ".join(f"{short.get(k, k)} {n}" for k, n in ordered)


def _in_window(counts: Dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{sum(n for k, n in counts.items() if k in IN_WINDOW)}/{total}" if total else "-"


def hang_of(progress: Dict[int, Optional[dict]], ranks: Dict[int, dict], world: int, mode: str, cp: str) -> str:
    for r in range(world):
        step = progress.get(r)
        if step and step.get("hung") and str(step.get("cp")) == cp and step.get("mode") in (mode, None):
            what = step.get("step")
            detail = step.get("case") or step.get("mib") or ""
            return f"HANG r{r} {what} {detail}".strip()
    for r in range(world):
        entry = (((ranks.get(r) or {}).get("cp") or {}).get(cp) or {}).get("modes", {}).get(mode)
        if entry and entry.get("error"):
            return f"error r{r}: {entry['error'][:40]}"
    return "no"


def mode_row(data: Dict[str, Any], cp: str, mode: str, world: int) -> Optional[Dict[str, Any]]:
    ranks = data["ranks"]
    entries = {r: ((rank.get("cp") or {}).get(cp) or {}).get("modes", {}).get(mode) for r, rank in ranks.items()}
    entries = {r: e for r, e in entries.items() if e}
    if not entries:
        if any(s and s.get("mode") == mode and str(s.get("cp")) == cp for s in data["progress"].values()):
            return {"mode": mode, "hang": hang_of(data["progress"], ranks, world, mode, cp), "missing": True}
        return None
    first = entries[min(entries)]
    sweep = [e.get("sweep") or {} for e in entries.values()]
    row: Dict[str, Any] = {
        "mode": mode,
        "switches": first.get("switches", ""),
        "judged": first.get("judged"),
        "note": first.get("note", ""),
        "status": (first.get("status") or {}),
        "cases": sum(s.get("cases", 0) for s in sweep),
        "identical": sum(s.get("identical", 0) for s in sweep),
        "failures": [f for s in sweep for f in s.get("failures", [])][:3],
        "out": _in_window((first.get("sweep") or {}).get("output", {})),
        "in": _in_window((first.get("sweep") or {}).get("input", {})),
        "by_case": (first.get("sweep") or {}).get("by_case", {}),
        "fp8_direct": (first.get("sweep") or {}).get("fp8_direct", ""),
        "hang": hang_of(data["progress"], ranks, world, mode, cp),
        "ranks_reporting": len(entries),
        "segments": {r: e.get("segments") or {} for r, e in entries.items()},
        "error": first.get("error"),
    }
    latency: Dict[float, Dict[str, Any]] = {}
    for r, e in entries.items():
        for lat in e.get("latency") or []:
            slot = latency.setdefault(float(lat["mib"]), {"p50": [], "kernel": [], "log": [], "trace": [],
                                                          "growths": 0, "bytes": lat.get("bytes")})
            slot["p50"].append(lat.get("p50_us"))
            trace = lat.get("trace") or {}
            if trace.get("kernel_median_us") is not None:
                slot["kernel"].append(trace["kernel_median_us"])
            if trace.get("share") is not None:
                slot["trace"].append(trace["share"])
            log = lat.get("log") or {}
            if log.get("share") is not None:
                slot["log"].append(log["share"])
            slot["growths"] += lat.get("growths") or 0
    row["latency"] = {}
    for mib, slot in latency.items():
        p50 = median([v for v in slot["p50"] if v is not None]) if slot["p50"] else None
        kernel = median(slot["kernel"]) if slot["kernel"] else None
        cp_n = int(cp)
        seconds = (kernel if kernel is not None else p50)
        busbw = (slot["bytes"] * (cp_n - 1) / cp_n / (seconds * 1e-6) / 1e9) if seconds and slot["bytes"] and cp_n > 1 \
            else None
        row["latency"][mib] = {"p50_us": p50, "kernel_us": kernel, "busbw_GBps": busbw,
                               "log_share": median(slot["log"]) if slot["log"] else None,
                               "trace_share": median(slot["trace"]) if slot["trace"] else None,
                               "growths": slot["growths"]}
    logs = [v["log_share"] for v in row["latency"].values() if v["log_share"] is not None]
    traces = [v["trace_share"] for v in row["latency"].values() if v["trace_share"] is not None]
    row["symk_log"] = sum(logs) / len(logs) if logs else None
    row["symk_trace"] = sum(traces) / len(traces) if traces else None
    row["growths"] = sum(v["growths"] for v in row["latency"].values())
    return row


def status_cell(row: Dict[str, Any]) -> str:
    targets = (row.get("status") or {}).get("targets") or {}
    patched = [n.split(".")[-1] for n, s in targets.items() if s.startswith("patched")]
    held = [n.split(".")[-1] for n, s in targets.items()
            if (s.startswith("held") or s.startswith("guarded")) and n != "race_guard"]
    parts = []
    if patched:
        parts.append("patched " + ",".join(patched))
    if held:
        parts.append("held " + ",".join(held))
    guard = ((row.get("status") or {}).get("guard") or {}).get("race_guard") or {}
    if guard.get("engaged"):
        parts.append("race guard engaged")
    if not parts:
        parts.append("-" if row["mode"] == "unpatched" else "nothing changed")
    return "; ".join(parts)


def send_verdict(rows: Dict[str, Dict[str, Any]], nccl: Optional[str], gpu: bool) -> str:
    """How the table sets ``SGLANG_CP_SYMM_SEND``'s default for this NCCL line."""
    send, default = rows.get("send"), rows.get("default")
    if not send or not default or send.get("missing") or default.get("missing"):
        return "send default: undecided (the default or send mode did not run)"
    staged = [n for n, state in ((send.get("status") or {}).get("targets") or {}).items() if "send" in state]
    if not staged:
        reason = ((send.get("status") or {}).get("policy") or {}).get("reason") or "no target staged"
        return f"send default: off for NCCL {nccl} (the policy stages nothing on this line: {reason})"
    if not gpu:
        return "send default: undecided on CPU (no kernel columns); run on 2-8 GPUs"
    if send.get("hang") != "no" or send["identical"] != send["cases"]:
        return f"send default: off for NCCL {nccl} (send mode {send.get('hang')}, {send['identical']}/{send['cases']} identical)"
    s, d = send.get("symk_log") or send.get("symk_trace"), default.get("symk_log") or default.get("symk_trace")
    if s is None or d is None:
        return f"send default: undecided for NCCL {nccl} (no kernel evidence: NCCL log and trace both empty)"
    if s <= d:
        return f"send default: off for NCCL {nccl} (staging does not change NCCL's choice: symk {_share(s)} vs {_share(d)})"
    faster = [mib for mib, lat in send["latency"].items() if lat["p50_us"] and default["latency"].get(mib, {}).get("p50_us")
              and lat["p50_us"] < default["latency"][mib]["p50_us"]]
    if not faster:
        return f"send default: off for NCCL {nccl} (symmetric kernel engaged, but the staging copy costs more than it saves)"
    return (f"send default: on for NCCL {nccl} (symk {_share(s)} vs {_share(d)}; faster at "
            f"{', '.join(f'{m:g} MiB' for m in sorted(faster))})")


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def aligned(table: List[List[str]]) -> List[str]:
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]


def render(folder: str) -> str:
    data = load(folder)
    ranks = data["ranks"]
    if not ranks:
        steps = {r: s for r, s in data["progress"].items()}
        return f"stage D: no rank wrote a result in {folder} (last steps: {steps})"
    head = ranks[min(ranks)]
    world = head.get("world", len(ranks))
    nccl = head.get("nccl") or {}
    gpu = not str(head.get("device", "")).startswith("cpu")
    version = nccl.get("engine") or nccl.get("given")
    lines: List[str] = []
    cp_sizes = sorted({cp for rank in ranks.values() for cp in (rank.get("cp") or {})}, key=int)
    sizes = sorted({float(l["mib"]) for rank in ranks.values() for c in (rank.get("cp") or {}).values()
                    for m in c.get("modes", {}).values() for l in (m.get("latency") or [])})
    summary = {"folder": folder, "tables": []}
    for cp in cp_sizes:
        groups = (head.get("cp") or {}).get(cp, {}).get("groups") or []
        alias = " = the TP group, as sglang makes it when attn_cp_size == tp_size" if (head.get("cp") or {}).get(
            cp, {}).get("cp_is_tp") else ""
        nccl_text = (f"NCCL {version} ({nccl.get('read_from')})" if gpu else
                     f"NCCL {version} judged by the policy (no NCCL on CPU)")
        lines.append(f"stage D | sglang {head.get('sglang')} | N={world} ranks, CP {cp} ({len(groups)} group"
                     f"{'s' if len(groups) != 1 else ''}{alias}) | {nccl_text} | {head.get('device')} | "
                     f"NCCL_CHECK_MODE={head.get('check_mode')} | torch {head.get('torch')}")
        header = ["mode", "switches", "plugin status", "identical", "hang", "out in win", "in in win", "symk L/T"]
        header += [f"{m:g}M us" for m in sizes] + [f"{m:g}M GB/s" for m in sizes] + ["growths", "segs/rank"]
        table = [header]
        rows = {}
        for mode in MODE_ORDER:
            row = mode_row(data, cp, mode, world)
            if row is None:
                continue
            rows[mode] = row
            if row.get("missing"):
                table.append([mode, "", "", "-", row["hang"], "-", "-", "-"] + ["-"] * (2 * len(sizes)) + ["-", "-"])
                continue
            lat = row["latency"]
            us = [(_fmt(lat[m]["p50_us"]) + (f"/k{_fmt(lat[m]['kernel_us'])}" if lat.get(m, {}).get("kernel_us") else ""))
                  if m in lat else "-" for m in sizes]
            bw = [_fmt(lat[m]["busbw_GBps"]) if m in lat and gpu else "n/a" for m in sizes]
            segs = row["segments"]
            seg_text = "/".join(str(sum(segs[r].values())) for r in sorted(segs)) if gpu else "n/a"
            if gpu and len({sum(s.values()) for s in segs.values()}) > 1:
                seg_text += " UNEVEN"
            symk = "n/a" if not gpu else f"{_share(row['symk_log'])}/{_share(row['symk_trace'])}"
            judged = f" [judged {row['judged']}]" if row.get("judged") and row["judged"] != version else ""
            table.append([mode, row["switches"] + judged, status_cell(row), f"{row['identical']}/{row['cases']}",
                          row["hang"], row["out"], row["in"], symk] + us + bw
                         + [str(row["growths"]) if gpu else "n/a", seg_text])
        lines += aligned(table)
        gathers = sorted({g for row in rows.values() for g in (row.get("by_case") or {})})
        if gathers:
            lines.append("  where each gather's output/input buffer was (rank 0):")
            where = [["    gather"] + list(rows)]
            for g in gathers:
                cells = []
                for row in rows.values():
                    case = (row.get("by_case") or {}).get(g)
                    cells.append(f"{_where(case['output'])}/{_where(case.get('input', {}))}" if case else "-")
                where.append(["    " + g] + cells)
            lines += aligned(where)
        notes = []
        for mode, row in rows.items():
            if row.get("note"):
                notes.append(f"{mode}: {row['note']}")
            if row.get("failures"):
                notes.append(f"{mode}: NOT identical: {row['failures'][0]}")
            if row.get("error"):
                notes.append(f"{mode}: error {row['error'][:200]}")
        fp8 = {row.get("fp8_direct") for row in rows.values() if row.get("fp8_direct")}
        if fp8:
            notes.append("fp8 payloads gathered as bytes (uint8 view); a float8 tensor handed over directly: "
                         + (" / ".join(sorted(fp8)) + (" (the same in every mode)" if len(fp8) == 1 else " (DIFFERS by mode)")))
        mapped = nccl.get("mapped") or []
        if gpu:
            notes.append(("TWO NCCL libraries mapped in rank 0 (the allocator and the communicator may not agree): "
                          if len(mapped) > 1 else "libnccl mapped in rank 0: ") + (", ".join(mapped) or "none"))
        cuda_only = head.get("cuda_only_context") or []
        if cuda_only and not gpu:
            notes.append(f"on CPU {', '.join(cuda_only)} opens no symmetric context (the release opens it for CUDA "
                         "tensors only), so its buffers show '-' in every mode")
        if not gpu:
            notes.append("gloo on CPU: latency is the host time of the whole function, not a measurement of NCCL; "
                         "kernel, bandwidth and pool columns need a GPU")
        notes.append(f"references, 8xH100 (issue 6): symmetric vs ring {REFERENCES['speedup_2MiB']}x at 2 MiB "
                     f"({REFERENCES['ring_us_2MiB']} -> {REFERENCES['symmetric_us_2MiB']} us), "
                     f"{REFERENCES['speedup_128MiB']}x at 128 MiB ({REFERENCES['ring_us_128MiB']} -> "
                     f"{REFERENCES['symmetric_us_128MiB']} us); ring busBW about {REFERENCES['ring_busbw_GBps']} GB/s")
        notes.append(send_verdict(rows, version, gpu))
        errors = [e for rank in ranks.values() for e in rank.get("errors", [])]
        if errors:
            notes.append(f"{len(errors)} error(s); first: {errors[0].strip().splitlines()[-1][:200]}")
        missing = [r for r in range(world) if r not in ranks]
        if missing:
            notes.append(f"ranks without a result: {missing}; last steps: "
                         f"{ {r: data['progress'].get(r) for r in missing} }")
        lines += ["  " + n for n in notes]
        lines.append("")
        summary["tables"].append({"cp": cp, "rows": rows, "notes": notes})
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return "\n".join(lines)


def verdict_ok(folder: str) -> bool:
    """True when every mode of every table ran on every rank, bit-identical and without a hang."""
    data = load(folder)
    ranks = data["ranks"]
    if not ranks:
        return False
    world = ranks[min(ranks)].get("world", len(ranks))
    if len(ranks) != world:
        return False
    for cp in {cp for rank in ranks.values() for cp in (rank.get("cp") or {})}:
        for mode in MODE_ORDER:
            row = mode_row(data, cp, mode, world)
            if row is None:
                continue
            if row.get("missing") or row["hang"] != "no" or row["identical"] != row["cases"] or row["cases"] == 0:
                return False
    return not any(rank.get("errors") for rank in ranks.values())


DEFAULT_SIZES = LATENCY_MIB

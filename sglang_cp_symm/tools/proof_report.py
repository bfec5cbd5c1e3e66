"""``sglang-cp-symm demo``: the rehearsal's proof for the installed release, as a maintainer reads it.

One table per release: each target of the register and each branch of it, with the
per-rank shares of one call (uneven on purpose), and per configuration of the plugin
how many rank-calls had the all-gather's output (``out``) and its send buffer
(``send``) allocated inside the attention-CP group's symmetric context. Under it, the
verdicts a pinned fleet needs: every result bit-identical to sglang's own and to the
true full tensor, nothing else ever in the context, every line of every target run.
"""

from __future__ import annotations

from typing import Dict, List, Optional

LEGEND = (
    "  cells: ranks whose all-gather output (out) / send buffer (send) was allocated inside the attention-CP\n"
    "  group's symmetric context, over the ranks that ran the call, summed over CP sizes {sizes}; '-' neither;\n"
    "  'WRONG' a result that differs from sglang's own or from the full tensor; 'ERROR' a call that raised.\n"
    "  shares: the rows each rank handed in, for the CP-{example} call (the layouts: contiguous slices for the\n"
    "  reorganized gathers and zigzag, token i on rank i % cp for round-robin and interleave, blocks r and 2cp-1-r\n"
    "  for the in-sequence split)"
)


def _cell(rows: List[dict], config: str) -> str:
    runs = [run[config] for row in rows for run in row["ranks"].values() if config in run]
    if not runs:
        return "n/a"
    if any("error" in r for r in runs):
        return "ERROR"
    if not all(r["correct"] and r["same_as_off"] in (None, True) for r in runs):
        return "WRONG"
    n = len(runs)
    out = sum(r["output_in_context"] for r in runs)
    send = sum(r["input_in_context"] for r in runs)
    parts = ([f"out {out}/{n}"] if out else []) + ([f"send {send}/{n}"] if send else [])
    return " ".join(parts) or "-"


def _moved(groups: Dict[tuple, List[dict]], names: List[str]) -> List[str]:
    """One line per configuration: which targets' output and send buffer it put in the context that the
    plugin-off run did not, and the op that allocated them."""
    found: Dict[str, Dict[str, set]] = {}
    ops: Dict[str, set] = {}
    for (target, _), rows in groups.items():
        for row in rows:
            for runs in row["ranks"].values():
                off = {(a["is_output"], a["is_input"]) for a in runs.get("off", {}).get("inside", [])}
                for name in names[1:]:
                    for a in runs.get(name, {}).get("inside", []):
                        if (a["is_output"], a["is_input"]) not in off:
                            role = "output" if a["is_output"] else "send"
                            found.setdefault(name, {}).setdefault(role, set()).add(target)
                            ops.setdefault(name, set()).add(a["op"])
    lines = []
    for name in names[1:]:
        roles = found.get(name, {})
        if not roles:
            lines.append(f"    {name:<15} nothing")
            continue
        lines.append(f"    {name:<15} output of {', '.join(sorted(roles.get('output', []))) or '-'}; "
                     f"send buffer (a staged copy of the input) of {', '.join(sorted(roles.get('send', []))) or '-'}; "
                     f"allocated by {', '.join(sorted(ops[name]))}")
    return lines


def _state_text(targets: dict) -> str:
    return ", ".join(f"{name} {t['state']}{' (' + t['detail'] + ')' if t['state'] == 'patched' else ''}"
                     for name, t in sorted(targets.items()) if not name.startswith("pool."))


def render(result: dict, show_configs: Optional[List[str]] = None) -> tuple:
    """(text, ok) for one ``rehearsal.prove`` result: what ran, the table of calls, and the verdicts."""
    from .rehearsal import merged_calls

    unfinished = _unfinished(result)
    if unfinished:
        return "\n".join(unfinished), False
    configs = [c for c in result["configs"] if show_configs is None or c["name"] in show_configs]
    names = [c["name"] for c in configs]
    calls = merged_calls(result)
    rank_calls = sum(len(c["ranks"]) for c in calls)
    verdicts, ok = _verdicts(result, calls, names, rank_calls)
    return "\n".join(_configurations(result, configs, calls, rank_calls) + _table(result, calls, names) + verdicts), ok


def _unfinished(result: dict) -> List[str]:
    """The lines for a rehearsal that ran nothing, or did not finish on every rank; [] when it finished."""
    release = result.get("release")
    lines: List[str] = []
    if "ranks" not in result or result.get("error") and not result.get("ranks"):
        lines.append(f"sglang {release or '(not installed)'}: nothing was run")
        for module, outcome in sorted(result.get("imports", {}).items()):
            if outcome != "imported":
                lines.append(f"  {module}: {outcome}")
        if result.get("error") and not any(o != "imported" for o in result.get("imports", {}).values()):
            lines.append(f"  {result['error']}")
        return lines
    failed = {rank: report["error"] for rank, report in result["ranks"].items() if "error" in report}
    if failed or "0" not in result["ranks"]:  # a rank that raised or never answered: its last line, no traceback
        lines.append(f"sglang {release}: the rehearsal did not finish; nothing below is a verdict")
        for rank, error in sorted(failed.items()):
            last = [line for line in error.strip().splitlines() if line.strip()][-1:] or ["(no message)"]
            lines.append(f"  rank {rank}: {last[0].strip()[:300]}")
        if result.get("error") and not failed:
            lines.append(f"  {result['error'][:300]}")
    return lines


def _configurations(result: dict, configs: List[dict], calls: List[dict], rank_calls: int) -> List[str]:
    """What ran: the release, the groups, the calls, and each configuration with what the plugin did in it."""
    rank0 = result["ranks"]["0"]
    lines = [f"sglang {result.get('release')}: the release's own CP all-gathers on {result['world']} CPU processes "
             f"(gloo), CP groups of {', '.join(map(str, result['sizes']))} ranks; {len(calls)} calls ({rank_calls} "
             "rank-calls) in each configuration", "configurations:"]
    for c in configs:
        status = rank0["status"].get(c["name"])
        lines.append(f"  {c['name']:<15} {c['label']}")
        if status:
            lines.append(f"  {'':<15} targets: {_state_text(status['targets'])}")
            if status.get("nccl"):
                lines.append(f"  {'':<15} NCCL policy: {status['nccl']['reason']}")
    return lines


def _table(result: dict, calls: List[dict], names: List[str]) -> List[str]:
    """One row per target and branch: an example's shares, and where its buffers were in each configuration."""
    width_t = max(len("target"), *(len(c["target"]) for c in calls))
    width_b = max(len("branch"), *(len(c["branch"]) for c in calls))
    width_s = 14
    groups: Dict[tuple, List[dict]] = {}
    for call in calls:
        groups.setdefault((call["target"], call["branch"]), []).append(call)
    cells = {key: [_cell(rows, name) for name in names] for key, rows in groups.items()}
    widths = [max(len(name), *(len(cells[k][i]) for k in cells)) for i, name in enumerate(names)]
    header = f"  {'target':<{width_t}}  {'branch':<{width_b}}  {'shares':<{width_s}}  " + "  ".join(
        f"{n:<{w}}" for n, w in zip(names, widths))
    lines = ["", header.rstrip()]
    example_cp = 3 if 3 in result["sizes"] else result["sizes"][0]
    for (target, branch), rows in groups.items():
        example = next((r for r in rows if r["cp"] == example_cp), rows[0])
        shares = str(example["lengths"]).replace(" ", "")
        lines.append((f"  {target:<{width_t}}  {branch:<{width_b}}  {shares:<{width_s}}  "
                      + "  ".join(f"{c:<{w}}" for c, w in zip(cells[(target, branch)], widths))).rstrip())
    moved = _moved(groups, names)
    if moved:
        lines.append("  moved into the context by the plugin (not there with it off):")
        lines.extend(moved)
    lines.append(LEGEND.format(sizes=", ".join(map(str, result["sizes"])), example=example_cp))
    return lines + [""]


def _verdicts(result: dict, calls: List[dict], names: List[str], rank_calls: int) -> tuple:
    """(lines, ok): results identical, nothing else inside the context, every line of every target ran."""
    from .rehearsal import coverage

    runs_of = [(runs, n) for row in calls for runs in row["ranks"].values() for n in names]
    errors = sum(1 for runs, n in runs_of if "error" in runs.get(n, {}))
    wrong = sum(1 for runs, n in runs_of if "error" not in runs.get(n, {"error": 1}) and not (
        runs[n]["correct"] and runs[n]["same_as_off"] in (None, True)))
    other = sum(1 for runs, n in runs_of if "error" not in runs.get(n, {})
                for a in runs[n]["inside"] if not (a["is_output"] or a["is_input"]))
    uneven = sum(1 for row in calls if len(set(row["lengths"])) > 1)
    ok = not errors and not wrong and not other
    lines = [f"results bit-identical to sglang's own and to the full tensor: "
             f"{'yes' if not wrong and not errors else f'NO ({wrong} wrong, {errors} raised)'}"
             f" ({rank_calls} rank-calls x {len(names)} configurations; {uneven} of {len(calls)} calls on uneven shares)",
             f"anything but the output and the send buffer inside the context: {'no' if not other else f'YES ({other})'}"]
    cov = coverage(result)
    missing = [(c, t, i["missing"]) for c, ts in cov.items() if c in names for t, i in ts.items() if i["missing"]]
    raise_only = max((i["not_run_raise_only"] for c, ts in cov.items() for i in ts.values()), default=0)
    if missing:
        ok = False
        lines.append("lines of a target that ran in no call:")
        for config, target, rows in missing:
            lines.append(f"  {config} {target}: " + "; ".join(f"{n}: {t}" for n, t in rows[:6]))
    else:
        lines.append("every line of every target ran, original and patched, in every configuration: yes"
                     + (" (not run: only statements that raise on invalid input)" if raise_only else ""))
    if errors:
        first = next(runs[n]["error"] for runs, n in runs_of if "error" in runs.get(n, {}))
        lines.append("first error: " + first.strip().splitlines()[0])
    if result.get("error"):
        ok = False
        lines.append(f"error: {result['error'][:2000]}")
    return lines, ok


def run_demo(world: int = 4, rounds: int = 1, send: bool = True, nccl: Optional[str] = None,
             every: bool = False) -> int:
    """``sglang-cp-symm demo``: prove the installed release, print the table; exit 1 unless all held."""
    from ..releases import installed_sglang
    from .rehearsal import default_configs, pinned_nccl, prove

    release = installed_sglang()
    if release is None:
        print("sglang is not installed in this environment: nothing to rehearse")
        return 1
    chosen = nccl or pinned_nccl(release)
    if nccl is None:
        print(f"NCCL: judged as {chosen}, the one sglang {release}'s torch pins (sglang_cp_symm/pins.py); this machine "
              "loads none. --as-nccl X judges another.")
    configs = default_configs(release, nccl=nccl, send=send, every=every)
    result = prove(world=world, sizes=tuple(range(2, world + 1)) if world <= 4 else (2, 3, world),
                   configs=configs, rounds=rounds)
    text, ok = render(result)
    print(text)
    return 0 if ok else 1

"""Stage B: a failure in the plugin's work at a symmetric context never changes where allocations go.

On the real ``SymmetricMemoryContext`` class of sglang 0.5.11 (and 0.5.10 for the
pool fix's own ``__enter__`` wrapper), with the plugin's context hooks installed, the
plugin's part is made to fail at entry, at exit and in the role lookup. What cannot
run here is faked, and only that: the class's own ``__enter__``/``__exit__`` begin and
end allocation to the pool through CUDA calls, so two stand-ins record "routing on"
and "routing off" instead, and instances are made without ``__init__`` (it reads the
current CUDA device). Each case asserts that routing is on inside the ``with`` exactly
as sglang's own context would have it and off after it, that the failure does not
propagate, and that it is reported once.
"""

import json

import pytest

from conftest import last_line, run_python

pytestmark = pytest.mark.release

ALLOCATOR = "sglang.srt.distributed.device_communicators.pynccl_allocator"

SETUP = f"""
    import json, logging
    import {ALLOCATOR} as pa
    from sglang_cp_symm.engine import context_hooks as ch, logs

    cls = pa.SymmetricMemoryContext
    ROUTING = []  # the contexts allocating into the pool now (what sglang's enter/exit switch on and off)

    def enter(self):
        ROUTING.append(self)
        return self

    def leave(self, *exc_info):
        ROUTING.remove(self)
        return False

    cls.__enter__, cls.__exit__ = enter, leave
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logs.logger.addHandler(handler)

    def warnings(side):
        return sum(f"symmetric context's {{side}} failed" in r for r in records)

    def context():
        ctx = object.__new__(cls)  # sglang's __init__ reads the current CUDA device
        ctx.is_graph_capture = False
        return ctx
"""

HOOKS = SETUP + """
    class Listener(ch.Listener):
        fail_entry = fail_exit = False
        def entered(self):
            if self.fail_entry:
                raise RuntimeError("entry broke")
        def leaving(self, frame=None):
            if self.fail_exit:
                raise RuntimeError("exit broke")

    listener = Listener()
    table = ch.ContextTable()
    restore = table.install(cls, listener)

    def gather():  # a CP all-gather the plugin watches
        ctx = context()
        with ctx:
            inside = [c is ctx for c in ROUTING]
        return inside, list(ROUTING)

    def guarded():  # one the race guard holds back: nothing is routed at all
        with context():
            inside = list(ROUTING)
        return inside, list(ROUTING)

    def raising():
        with context():
            raise ValueError("sglang's own error in the with body")

    table.set_role(gather.__code__, ch.WATCH)
    table.set_role(guarded.__code__, ch.GUARD)
    out = {"healthy": gather()}
    listener.fail_entry = True
    out["entry"] = [gather() for _ in range(3)]
    listener.fail_entry, listener.fail_exit = False, True
    out["exit"] = [gather() for _ in range(3)]
    listener.fail_exit = False
    try:
        raising()
    except ValueError as exc:
        out["body"] = [str(exc), list(ROUTING)]
    out["guard"] = guarded()

    class BrokenRoles(dict):
        def get(self, key, default=None):
            raise RuntimeError("role lookup broke")

    restore()
    table.roles.ids = BrokenRoles(table.roles.ids)  # the hooks look roles up by the code object's id
    restore = table.install(cls, listener)
    out["roles"] = [gather() for _ in range(2)]
    restore()
    out["restored"] = cls.__dict__["__enter__"] is enter and cls.__dict__["__exit__"] is leave
    out["warnings"] = {"entry": warnings("entry"), "exit": warnings("exit")}
    print(json.dumps(out))
"""


def test_hook_failures_never_change_the_routing_and_are_reported_once():
    out = json.loads(last_line(run_python("0.5.11", HOOKS, env={})))
    routed_inside_off_after = [[True], []]
    assert out["healthy"] == routed_inside_off_after
    assert out["entry"] == [routed_inside_off_after] * 3
    assert out["exit"] == [routed_inside_off_after] * 3
    assert out["body"] == ["sglang's own error in the with body", []]  # sglang's exception is sglang's
    assert out["guard"] == [[], []]
    assert out["roles"] == [routed_inside_off_after] * 2  # a broken lookup: the context is sglang's own
    assert out["restored"]
    assert out["warnings"] == {"entry": 1, "exit": 1}  # the role lookup shares the entry's one report


POOL = SETUP + """
    import sglang_cp_symm as s
    from sglang_cp_symm.engine import pool, patching
    from sglang_cp_symm.engine.settings import read_settings

    s.unpatch()  # the .pth bootstrap applied the plugin at the import above; apply it again with the stand-ins
    cls.__enter__, cls.__exit__ = enter, leave  # (unpatch put sglang's own back)
    status = s.patch(read_settings(), nccl="2.30.7")["targets"]["pool.attention_cp_registration"]

    def broken(context):
        raise RuntimeError("re-entry broke")

    pool.reenter_group_pool = broken

    def gather():
        ctx = context()
        ctx._cp_symm_pool, ctx.exited = object(), True
        with ctx:
            inside = [c is ctx for c in ROUTING]
        return inside, list(ROUTING)

    out = {"status": status, "runs": [gather() for _ in range(3)]}
    s.unpatch()
    out["restored"] = cls.__dict__["__enter__"] is enter
    out["warnings"] = sum("re-entered sglang's shared pool" in r for r in records)
    print(json.dumps(out))
"""


def test_the_pool_fix_reentry_failing_enters_sglangs_own_way():
    """0.5.10: the pool fix wraps ``__enter__`` to re-enter the CP pool; when that fails, sglang's own ``__enter__``
    still runs (the context is entered, routing on inside, off after) and the failure is reported once."""
    out = json.loads(last_line(run_python("0.5.10", POOL, env={"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_WARMUP": "0"})))
    assert {k: out["status"][k] for k in ("where", "state", "detail")} == {
        "where": f"{ALLOCATOR}.SymmetricMemoryContext", "state": "patched", "detail": "_mem_pool_ctx"}
    assert out["status"]["verdict"]["state"] == "patched"  # what the plan said is what was done
    assert out["runs"] == [[[True], []]] * 3
    assert out["restored"] and out["warnings"] == 1

"""Stage B: the plugin acts only on the contexts the register's modules open, and a failure never changes routing.

On the real ``SymmetricMemoryContext`` class of sglang 0.5.11 (and 0.5.10 for the pool
fix's re-entry), the openers of ``context_hooks`` are bound in a module as the patcher
binds them in the register's modules, and the plugin's part is made to fail at entry,
at exit and in the role lookup. What cannot run here is faked, and only that: the
class's own ``__enter__``/``__exit__`` begin and end allocation to the pool through CUDA
calls, so two stand-ins record "routing on" and "routing off" instead, and the contexts
are made without ``__init__`` (it reads the current CUDA device). Each case asserts that
routing is on inside the ``with`` exactly as sglang's own context would have it and off
after it, that the failure does not propagate, and that it is reported once; and that
sglang's class itself is never changed.
"""

import json

import pytest

from conftest import last_line, run_python

pytestmark = pytest.mark.release

ALLOCATOR = "sglang.srt.distributed.device_communicators.pynccl_allocator"

SETUP = f"""
    import json, logging, textwrap, types
    from contextlib import nullcontext
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
    clean = dict(vars(cls))
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logs.logger.addHandler(handler)

    def warnings(side):
        return sum(f"symmetric context's {{side}} failed" in r for r in records)

    def use_symmetric_memory(group_coordinator, disabled=False):  # sglang's, but for what needs a GPU (see the docstring)
        if disabled:
            return nullcontext()
        ctx = object.__new__(cls)
        ctx.group_coordinator, ctx.is_graph_capture = group_coordinator, False
        return ctx

    GROUP = types.SimpleNamespace(unique_name="attn_cp:0")
    module = types.ModuleType("register_module")  # a module of the register, as it binds sglang's function
    module.use_symmetric_memory = use_symmetric_memory
"""

OPENERS = SETUP + """
    class Listener(ch.Listener):
        fail_entry = fail_exit = False
        calls = 0
        def entered(self):
            self.calls += 1
            if self.fail_entry:
                raise RuntimeError("entry broke")
        def leaving(self, frame=None):
            if self.fail_exit:
                raise RuntimeError("exit broke")

    FUNCTIONS = '''
        def gather():  # a CP all-gather the plugin watches
            ctx = use_symmetric_memory(GROUP)
            with ctx as entered:
                inside = [c is entered for c in ROUTING]
            return inside, list(ROUTING)

        def guarded():  # one the race guard holds back: nothing is routed at all
            with use_symmetric_memory(GROUP):
                inside = list(ROUTING)
            return inside, list(ROUTING)

        def disabled():
            return type(use_symmetric_memory(GROUP, disabled=True)).__name__

        def raising():
            with use_symmetric_memory(GROUP):
                raise ValueError("sglang's own error in the with body")

        def other_group(name):
            return type(use_symmetric_memory(types.SimpleNamespace(unique_name=name))).__name__
    '''
    vars(module).update(GROUP=GROUP, ROUTING=ROUTING, types=types)
    exec(textwrap.dedent(FUNCTIONS), vars(module))
    m = module
    listener = Listener()
    table = ch.ContextTable()
    table.listener = listener
    for name in ("gather", "disabled", "raising", "other_group"):
        table.set_role(getattr(m, name).__code__, ch.WATCH)
    unbind = table.bind(module, ["use_symmetric_memory"])

    def elsewhere():  # a TP all-reduce's context, opened outside the register's modules
        ctx = use_symmetric_memory(GROUP)
        with ctx:
            pass
        return type(ctx) is cls

    out = {"healthy_by_module": m.gather(), "listened": listener.calls, "disabled": m.disabled(),
           "elsewhere": elsewhere()}
    table.set_role(m.guarded.__code__, ch.GUARD)  # two roles in one module: told apart by the opener's code
    out["healthy_by_code"] = m.gather()
    listener.fail_entry = True
    out["entry"] = [m.gather() for _ in range(3)]
    listener.fail_entry, listener.fail_exit = False, True
    out["exit"] = [m.gather() for _ in range(3)]
    listener.fail_exit = False
    try:
        m.raising()
    except ValueError as exc:
        out["body"] = [str(exc), list(ROUTING)]
    out["guard"] = m.guarded()
    table.guarded.add("attn_cp")  # the guard engaged: every context of the group, whoever opens it there
    out["group_guard"] = [m.other_group("attn_cp:3"), m.other_group("tp:0")]
    table.guarded.clear()

    class BrokenRoles(dict):
        def get(self, key, default=None):
            raise RuntimeError("role lookup broke")

    unbind()
    out["unbound"] = m.use_symmetric_memory is use_symmetric_memory
    table.roles.ids = BrokenRoles(table.roles.ids)  # the opener looks roles up by the code object's id
    table.bind(module, ["use_symmetric_memory"])
    out["roles"] = [m.gather() for _ in range(2)]
    out["class_untouched"] = dict(vars(cls)) == clean
    out["warnings"] = {"entry": warnings("entry"), "exit": warnings("exit"), "opening": warnings("opening")}
    print(json.dumps(out))
"""


def test_opener_failures_never_change_the_routing_and_are_reported_once():
    out = json.loads(last_line(run_python("0.5.11", OPENERS, env={})))
    routed_inside_off_after = [[True], []]
    assert out["healthy_by_module"] == routed_inside_off_after and out["listened"] == 1
    assert out["healthy_by_code"] == routed_inside_off_after
    assert out["disabled"] == "nullcontext"  # sglang's own answer for a disabled context, passed through
    assert out["elsewhere"]  # a context opened outside the register's modules is sglang's own object, as built
    assert out["entry"] == [routed_inside_off_after] * 3
    assert out["exit"] == [routed_inside_off_after] * 3
    assert out["body"] == ["sglang's own error in the with body", []]  # sglang's exception is sglang's
    assert out["guard"] == [[], []]
    assert out["group_guard"] == ["nullcontext", "WatchedContext"]
    assert out["unbound"]
    assert out["roles"] == [routed_inside_off_after] * 2  # a broken lookup: the context is sglang's own
    assert out["class_untouched"]  # sglang's class never changes (the race guard's hooks are not on)
    assert out["warnings"] == {"entry": 1, "exit": 1, "opening": 1}


REENTRY = SETUP + """
    from sglang_cp_symm.engine import pool

    def broken(context):
        raise RuntimeError("re-entry broke")

    pool.reenter_group_pool = broken
    routed = ch.ContextTable().context_type(cls, "reenter")  # the class the opener gives a routed 0.5.10 CP context

    def gather():
        ctx = use_symmetric_memory(GROUP)
        ctx.__class__ = routed
        ctx._cp_symm_pool, ctx.exited = object(), True
        with ctx:
            inside = [c is ctx for c in ROUTING]
        return inside, list(ROUTING)

    out = {"runs": [gather() for _ in range(3)], "class_untouched": dict(vars(cls)) == clean}
    out["warnings"] = sum("re-entered sglang's shared pool" in r for r in records)
    print(json.dumps(out))
"""


def test_the_pool_fix_reentry_failing_enters_sglangs_own_way():
    """0.5.10: a CP context routed to the CP pool comes back to it when re-entered; when that fails, sglang's own
    ``__enter__`` still runs (the context is entered, routing on inside, off after) and the failure is reported
    once."""
    out = json.loads(last_line(run_python("0.5.10", REENTRY, env={})))
    assert out["runs"] == [[[True], []]] * 3
    assert out["class_untouched"] and out["warnings"] == 1

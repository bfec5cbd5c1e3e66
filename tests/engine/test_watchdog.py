"""Stage A: the pool watchdog's counting, phases, hang report and per-rank records.

The watchdog reads three things that need a GPU (the device memory in use, sglang's
symmetric pools and their snapshots). Here they are replaced by a small model of a
pool whose segments the test adds, passed through the watchdog's own parameters;
the same code ran against sglang's real pool on an H100 (tests/test_gpu_warmup.py,
docs/gpu-runs.md). Everything else (phases, attribution, thresholds, records, the
comparison across ranks) is the real code.
"""

import json
import logging
import sys
import threading

import pytest

from sglang_cp_symm.engine import watchdog as wd


class FakeDevice:
    """Device memory in use, and one symmetric pool made of segments (what the GPU would report)."""

    def __init__(self):
        self.used = 1000
        self.segments = []

    def grow_pool(self, size):
        self.segments.append(size)
        self.used += size

    def other_allocation(self, size):
        self.used += size

    def watchdog(self):
        return wd.PoolWatchdog(reserved=lambda: self.used, pools=lambda: {"cp": self},
                               stats=lambda pool: {"segments": len(pool.segments), "bytes": sum(pool.segments)})


def gather_that_allocates(dog, device, size):
    """Stands for a CP all-gather: opens a symmetric context, allocates, leaves."""
    dog.entered()
    if size:
        device.grow_pool(size)
    return dog.leaving(sys._getframe())


def other_context(dog, device, size):
    """Stands for a TP all-reduce's context: the context hooks call nothing of the watchdog for it (role ``PLAIN``,
    tests/engine/test_context_hooks.py), so its growth is only seen by a later reading."""
    if size:
        device.grow_pool(size)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("SGLANG_CP_SYMM_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv(wd.RUN_ID, "run-1")
    device = FakeDevice()
    dog = device.watchdog()
    dog.watch(gather_that_allocates.__code__)
    return device, dog


def test_a_growth_in_a_cp_gather_is_counted_once_with_its_size_phase_and_line(setup):
    device, dog = setup
    assert gather_that_allocates(dog, device, 0) is None  # first reading: the baseline
    event = gather_that_allocates(dog, device, 2 << 20)
    assert event.grown_bytes == 2 << 20 and (event.segments_before, event.segments_after) == (0, 1)
    assert event.phase == wd.START and "in gather_that_allocates" in event.site and "test_watchdog.py:" in event.site
    assert gather_that_allocates(dog, device, 0) is None  # a hit: nothing new
    assert dog.counts == {wd.START: 1, wd.WARMUP: 0, wd.SERVING: 0}


def test_unmeasured_contexts_cost_no_reading_and_their_growth_is_caught_between_requests(setup):
    device, dog = setup
    readings = []
    dog._reserved = lambda: readings.append(1) or device.used
    gather_that_allocates(dog, device, 0)
    before = len(readings)
    other_context(dog, device, 4 << 20)  # a TP context: no reading at all
    assert len(readings) == before and dog.counts[wd.START] == 0
    event = dog.between_requests()
    assert event is not None and event.grown_bytes == 4 << 20 and event.site == wd.OUTSIDE_AT_REQUEST


def test_growth_elsewhere_is_not_blamed_on_the_next_gather(setup):
    device, dog = setup
    gather_that_allocates(dog, device, 0)
    other_context(dog, device, 4 << 20)
    dog.traffic()
    event = gather_that_allocates(dog, device, 0)
    assert event is None
    assert [e.site for e in dog.events] == [wd.OUTSIDE_AT_GATHER]


def test_memory_outside_the_pools_is_not_a_growth_and_freed_memory_resets_the_mark(setup):
    device, dog = setup
    gather_that_allocates(dog, device, 0)
    device.other_allocation(64 << 20)  # activations in PyTorch's default pool
    assert dog.between_requests() is None and dog.events == []
    device.used -= 64 << 20  # torch.cuda.empty_cache()
    assert dog.between_requests() is None
    assert gather_that_allocates(dog, device, 2 << 20).grown_bytes == 2 << 20


def test_phases_and_the_per_rank_warmup_line(setup, caplog):
    device, dog = setup
    gather_that_allocates(dog, device, 0)
    dog.begin_warmup(8192)
    gather_that_allocates(dog, device, 20 << 20)
    dog.begin_warmup(910)  # a second warm-up prompt keeps the phase open
    gather_that_allocates(dog, device, 2 << 20)
    line = dog.finish_warmup()
    assert dog.phase == wd.SERVING and dog.counts[wd.WARMUP] == 2
    assert "warm-up of 2 prompt(s) (8192, 910 tokens)" in line and "2 growth(s)" in line
    assert "cp 0.0 MiB in 0 segment(s)" in line and "cp 22.0 MiB in 2 segment(s)" in line
    assert dog.finish_warmup() is None  # once per rank
    with caplog.at_level(logging.WARNING, logger="sglang.cp_symm"):
        gather_that_allocates(dog, device, 2 << 20)
    assert dog.counts[wd.SERVING] == 1
    assert any("during serving" in r.message and "growth #1 after warm-up" in r.message for r in caplog.records)


def test_first_traffic_opens_serving_when_no_warmup_ran(setup):
    device, dog = setup
    dog.traffic()
    gather_that_allocates(dog, device, 0)
    gather_that_allocates(dog, device, 2 << 20)
    assert dog.counts[wd.SERVING] == 1


def test_a_thread_stuck_in_a_context_is_reported_once_with_where_it_waits(setup, caplog):
    device, dog = setup
    entered, release = threading.Event(), threading.Lock()
    release.acquire()

    def stuck():
        dog.entered()
        entered.set()
        release.acquire(timeout=10)  # a C call, as ncclCommWindowRegister is: this frame is where it waits
        dog.leaving(sys._getframe())

    thread = threading.Thread(target=stuck)
    thread.start()
    entered.wait(5)
    try:
        since = dog._inside[thread.ident][0]
        assert dog.check_stuck(since + wd.HANG_REPORT_AFTER_S - 1) == 0
        with caplog.at_level(logging.ERROR, logger="sglang.cp_symm"):
            assert dog.check_stuck(since + wd.HANG_REPORT_AFTER_S + 1) == 1
        assert dog.check_stuck(since + 2 * wd.HANG_REPORT_AFTER_S) == 0  # once
        assert "in stuck" in caplog.records[-1].message and "a hang" in caplog.records[-1].message
    finally:
        release.release()
        thread.join()
    assert thread.ident not in dog._inside


def test_thread_site_leaves_no_reference_cycle_behind():
    """The monitor once kept pool blocks alive through sys._current_frames(); nothing may survive it."""
    import gc
    import weakref

    class Block:
        pass

    ready, done = threading.Event(), threading.Lock()
    done.acquire()
    ref = {}

    def holder():
        block = Block()
        ref["weak"] = weakref.ref(block)
        ready.set()
        done.acquire(timeout=5)

    thread = threading.Thread(target=holder)
    thread.start()
    ready.wait(5)
    gc.disable()
    try:
        assert "in holder" in wd.thread_site(thread.ident)
        done.release()
        thread.join()
        assert ref["weak"]() is None, "the frame's locals outlived the thread: a reference cycle"
    finally:
        gc.enable()


def test_rank_records_and_the_comparison_that_names_an_uneven_rank(setup, tmp_path):
    device, dog = setup
    for rank, segments in (("rank 0 (tp 0)", 2), ("rank 1 (tp 1)", 3)):
        dog.rank, dog.rank_info = rank, {"tp_rank": rank[-2], "pp_rank": 0}
        dog.known = {"cp": {"segments": segments, "bytes": segments << 21}}
        dog.counts[wd.SERVING] = segments - 2
        assert wd.write_rank_record(dog).startswith(str(tmp_path / "run-1"))
    run = wd.read_run(str(tmp_path), "run-1")
    assert sorted(run["ranks"]) == ["rank-0--tp-0-", "rank-1--tp-1-"]
    findings = wd.compare_ranks(run)
    assert any("different numbers of symmetric pool segments" in f and "rank-1--tp-1-: 3" in f for f in findings)
    assert any("pool growths after the warm-up" in f for f in findings)
    json.dumps(run)  # what the doctor and status() print


def test_pipeline_stages_are_compared_separately():
    run = {"ranks": {"a": {"rank_info": {"pp_rank": 0}, "pools": {"cp": {"segments": 2}}},
                     "b": {"rank_info": {"pp_rank": 1}, "pools": {"cp": {"segments": 5}}}}}
    assert wd.compare_ranks(run) == []


def test_an_unwritable_report_folder_gives_one_warning(setup, monkeypatch, caplog, tmp_path):
    """The folder was writable when the switches were read, and is no longer when a rank writes (here: a file
    took its place): one warning, and the rank serves on."""
    device, dog = setup
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(wd, "report_dir", lambda: str(blocker))
    with caplog.at_level(logging.WARNING, logger="sglang.cp_symm"):
        assert wd.write_rank_record(dog) is None
        assert wd.write_rank_record(dog) is None
    assert len([r for r in caplog.records if "cannot write the rank record" in r.message]) == 1


# -- the signal: the allocator's counter (issue 23) ------------------------------------------------
class CountingDevice(FakeDevice):
    """FakeDevice whose pool growths are also counted the way the compiled allocator counts them: in a real
    ctypes array of three cells (allocations, bytes, frees) that the watchdog reads from its address. Faked:
    the library itself (a compiled one is tested in test_alloc_counter.py) and finding it (``locate``)."""

    def __init__(self):
        super().__init__()
        import ctypes

        self.cells = (ctypes.c_uint64 * 3)()
        self.address = ctypes.addressof(self.cells)
        self.device_readings = 0

    def grow_pool(self, size):
        super().grow_pool(size)
        self.cells[1] += size
        self.cells[0] += 1

    def free_segment(self):
        self.used -= self.segments.pop(0)
        self.cells[2] += 1

    def watchdog(self):
        def device_reading():
            self.device_readings += 1
            return self.used

        return wd.PoolWatchdog(reserved=device_reading, pools=lambda: {"cp": self},
                               stats=lambda pool: {"segments": len(pool.segments), "bytes": sum(pool.segments)})


@pytest.fixture
def counting(tmp_path, monkeypatch):
    """A watchdog that installed the counter on a module holding 0.5.11's real allocator source (from its wheel)."""
    from sglang_cp_symm.engine import alloc_counter

    monkeypatch.setenv("SGLANG_CP_SYMM_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv(wd.RUN_ID, "run-1")
    from test_alloc_counter import SOURCES

    device = CountingDevice()
    dog = device.watchdog()
    dog.watch(gather_that_allocates.__code__)
    module = __import__("types").SimpleNamespace(nccl_allocator_source=SOURCES["0.5.11"], _allocator=None,
                                                 _mem_pool=None)
    located = []
    monkeypatch.setattr(alloc_counter, "locate", lambda: located.append(1) or (device.address, ""))
    undo = dog.count_allocations(module)
    assert undo is not None and alloc_counter.SYMBOL in module.nccl_allocator_source
    return device, dog, module, located


def test_the_counter_is_read_once_the_pool_exists_and_no_context_asks_the_device(counting):
    device, dog, module, located = counting
    assert gather_that_allocates(dog, device, 0) is None and located == []  # no pool yet: nothing can grow
    module._allocator = object()  # sglang compiled the counting allocator
    device.grow_pool(256 << 20)  # the pre-allocation: the baseline, where the counter proves itself
    assert gather_that_allocates(dog, device, 0) is None and located == [1] and dog.signal == "allocator counter"
    event = gather_that_allocates(dog, device, 2 << 20)
    assert (event.grown_bytes, event.segments_before, event.segments_after, event.allocations) == (2 << 20, 1, 2, 1)
    assert "in gather_that_allocates" in event.site and "test_watchdog.py:" in event.site
    for _ in range(100):
        gather_that_allocates(dog, device, 0)
    assert device.device_readings == 0  # every context read the counter, none the device memory
    assert dog.counts[wd.START] == 1 and located == [1]


def test_a_segment_freed_and_another_allocated_is_still_a_growth(counting):
    """The device-memory signal saw no rise here (freed, then the same size again); the counter sees the call."""
    device, dog, module, _ = counting
    module._allocator = object()
    device.grow_pool(2 << 20)
    gather_that_allocates(dog, device, 0)
    device.free_segment()
    event = gather_that_allocates(dog, device, 2 << 20)
    assert event is not None and event.allocations == 1 and event.grown_bytes == 2 << 20


def test_growth_outside_the_gathers_is_seen_by_the_next_reading(counting):
    device, dog, module, _ = counting
    module._allocator = object()
    gather_that_allocates(dog, device, 0)
    other_context(dog, device, 4 << 20)
    assert dog.between_requests().site == wd.OUTSIDE_AT_REQUEST


def test_a_counter_that_disagrees_with_the_snapshots_falls_back_with_one_line(counting, caplog):
    device, dog, module, _ = counting
    module._allocator = object()
    gather_that_allocates(dog, device, 0)
    with caplog.at_level(logging.WARNING, logger="sglang.cp_symm"):
        device.cells[0] += 1  # an allocation of a pool the watchdog does not read
        event = gather_that_allocates(dog, device, 2 << 20)
    assert event is not None and event.grown_bytes == 2 << 20  # the growth itself is still reported
    lines = [r.message for r in caplog.records if "instead of the allocator's counter" in r.message]
    assert len(lines) == 1 and "counted 1 allocation(s)" in lines[0] and "from 0 to 0 segment(s)" in lines[0]
    assert dog.signal.startswith("device memory") and dog.describe()["signal_note"].startswith("the allocator counted")
    gather_that_allocates(dog, device, 2 << 20)
    assert device.device_readings > 0 and dog.counts[wd.START] == 2  # measured by the device memory from now on


def test_a_pool_compiled_before_the_plugin_loaded_gives_the_fallback_and_says_why(caplog):
    from test_alloc_counter import SOURCES

    dog = FakeDevice().watchdog()
    module = __import__("types").SimpleNamespace(nccl_allocator_source=SOURCES["0.5.12"], _allocator=object(),
                                                 _mem_pool=object())
    with caplog.at_level(logging.WARNING, logger="sglang.cp_symm"):
        assert dog.count_allocations(module) is None
    assert [r.message for r in caplog.records if "compiled before the plugin was loaded" in r.message]
    assert dog.signal.startswith("device memory")


def test_a_counter_not_found_gives_the_fallback(counting, monkeypatch, caplog):
    from sglang_cp_symm.engine import alloc_counter

    device, dog, module, _ = counting
    monkeypatch.setattr(alloc_counter, "locate", lambda: (None, "0 loaded libraries export the counter"))
    module._allocator = object()
    with caplog.at_level(logging.WARNING, logger="sglang.cp_symm"):
        gather_that_allocates(dog, device, 0)
        assert gather_that_allocates(dog, device, 2 << 20).grown_bytes == 2 << 20
    assert len([r for r in caplog.records if "0 loaded libraries" in r.message]) == 1

"""The register: every attention-CP all-gather sglang-cp-symm knows, per sglang release.

This is data, not mechanism. Runtime patching (``patching``), the generated
``patches/`` and the ``doctor`` all read it, so a new sglang release is supported
by editing this file alone. Each entry follows the vllm-ascend form: what the
target is, why it is patched, the upstream change that fixed it, and when the
patch can be dropped.

Sources for the facts below (read from the released wheels, see
``../shared/notes/sglang-internals-by-release.md``):
- 0.5.6-0.5.8 run the NSA prefill-CP gathers of ``layers/attention/nsa/utils.py`` on the
  attention-TP group with their outputs outside the pool (0.5.8 adds a round-robin gather);
  0.5.9 moved them to the attention-CP group and registered them (sglang PR #17756).
- 0.5.10 added ``layers/utils/cp_utils.py``; both ``reorganized`` gathers allocate
  their output outside ``use_symmetric_memory``.
- sglang PR #22914 (0.5.11) folded the NSA helpers into cp_utils and brought the
  context to ``cp_all_gather_reorganized_into_tensor``, but missed the KV-cache
  variant; PR #24040 (0.5.12) says so in its description and fixes it.
- sglang PR #21392 (0.5.12) registers every pool segment with every communicator
  at context exit; before it, a segment is registered only with the communicator
  whose context created it.
- From 0.5.14 ``layers/cp/`` holds the CP-v2 gathers (already in the context);
  from 0.5.20 ``cp_utils`` is a stub that raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .releases import Release

R = Release.parse

#: The releases the register has been checked against. Outside it nothing is patched.
FIRST_SUPPORTED = R("0.5.6")
#: 0.5.6-0.5.8 run the NSA prefill-CP gathers on the attention-TP group; 0.5.9 gave CP a group of its own.
ATTENTION_CP_GROUP_FROM = R("0.5.9")
LAST_SUPPORTED = R("0.5.23")

SYMMETRIC_CONTEXT_MODULE = "sglang.srt.distributed.device_communicators.pynccl_allocator"
SYMMETRIC_CONTEXT_NAME = "use_symmetric_memory"
ALLOCATION_SYMMETRIC_MODULE = "sglang.srt.layers.dp_attention"
ALLOCATION_SYMMETRIC_NAME = "is_allocation_symmetric"


@dataclass(frozen=True)
class Target:
    """One function whose all-gather output must be allocated in the CP group's symmetric context.

    ``output`` and ``input`` name the variables the function hands to the
    all-gather as receive and send buffer; ``group`` is the expression, as the
    function itself writes it, that names the attention-CP group coordinator.

    ``uniform`` lists the expressions of the function (parameters, or calls the
    function makes, as it writes them) that hold the same value on every rank of
    the group, and ``uniform_why`` cites the sglang source that makes them so. The
    rewrite moves an allocation only when its size is built from these, constants
    and the gather input's own shape (``rewrite``'s safety rule); a target that
    needs no output edit lists none.
    """

    name: str
    module: str
    function: str
    output: str
    input: str
    group: str
    first: Release
    last: Release
    fixed_in: Optional[Release]
    fixed_by: str
    drop_when: str
    uniform: tuple[str, ...] = ()
    uniform_why: str = ""

    def exists_in(self, release: Release) -> bool:
        return self.first <= release <= self.last

    def fixed_upstream_in(self, release: Release) -> bool:
        return self.fixed_in is not None and release >= self.fixed_in

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.function}"


@dataclass(frozen=True)
class PoolFix:
    """Releases whose allocator registers a pool segment only with the communicator that created it."""

    name: str
    module: str
    context_class: str
    first: Release
    last: Release
    fixed_by: str
    drop_when: str

    def applies_to(self, release: Release) -> bool:
        return self.first <= release <= self.last

    def group_getter(self, release: Release) -> str:
        """The ``dp_attention`` getter of the group the release's CP all-gathers run on."""
        return "get_attention_tp_group" if release < ATTENTION_CP_GROUP_FROM else "get_attention_cp_group"


CP_UTILS = "sglang.srt.layers.utils.cp_utils"
NSA_UTILS = "sglang.srt.layers.attention.nsa.utils"
WRITTEN_WITH_CONTEXT = "never needed an output patch"

#: Why both reorganizing gathers of cp_utils (0.5.10-0.5.19) see one total length and CP size on every rank.
REORGANIZED_UNIFORM_WHY = (
    "its callers cp_all_gather_rerange_output and cp_all_gather_rerange_kv_cache (cp_utils.py 0.5.10:192, 230; "
    "0.5.11:263, 301) pass forward_batch.attn_cp_metadata.total_seq_lens, which "
    "prepare_context_parallel_metadata sets to the whole request's length (0.5.10:458, 0.5.11:547), and their "
    "cp_size, the attention-CP size (flashattention_backend.py 0.5.10:567 passes self.attn_cp_size)"
)

TARGETS: tuple[Target, ...] = (
    Target(
        name="nsa.reorganized_tp",
        module=NSA_UTILS,
        function="cp_attn_tp_all_gather_reorganazied_into_tensor",
        output="input_tensor_all",
        input="input_",
        group="get_attention_tp_group()",
        first=R("0.5.6"),
        last=R("0.5.8"),
        fixed_in=R("0.5.9"),
        fixed_by="sglang PR #17756 (0.5.9)",
        drop_when="sglang >= 0.5.9",
        uniform=("total_len", "attn_tp_size"),
        uniform_why=(
            "its one caller, cp_all_gather_rerange_output (nsa/utils.py 0.5.6:157, 0.5.7:166, 0.5.8:343), passes "
            "forward_batch.nsa_cp_metadata.total_seq_lens, which prepare_input_dp_with_cp_dsa sets to the whole "
            "request's length (0.5.6:326, 0.5.8:532), and its own cp_size, the models' get_attention_tp_size() "
            "(deepseek_v2.py 0.5.8:1112, nsa_indexer.py 0.5.8:157)"
        ),
    ),
    Target(
        name="nsa.rerange_output_tp",
        module=NSA_UTILS,
        function="cp_all_gather_rerange_output",
        output="output_tensor",
        input="input_tensor",
        group="get_attention_tp_group()",
        first=R("0.5.8"),
        last=R("0.5.8"),
        fixed_in=R("0.5.9"),
        fixed_by="sglang PR #17756 (0.5.9)",
        drop_when="sglang >= 0.5.9",
        uniform=("cp_size", "is_nsa_prefill_cp_round_robin_split()"),
        uniform_why=(
            "callers pass self.cp_size = get_attention_tp_size() (deepseek_v2.py 0.5.8:1112, 2515; "
            "nsa_indexer.py 0.5.8:157; deepseek_nextn.py 0.5.8:125); the branch predicate reads only "
            "get_global_server_args() (nsa/utils.py 0.5.8:26-42), the same command line in every process"
        ),
    ),
    Target(
        name="nsa.reorganized",
        module=NSA_UTILS,
        function="cp_attn_tp_all_gather_reorganazied_into_tensor",
        output="input_tensor_all",
        input="input_",
        group="get_attention_cp_group()",
        first=R("0.5.9"),
        last=R("0.5.10"),
        fixed_in=R("0.5.9"),
        fixed_by="sglang PR #17756 (0.5.9)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
    Target(
        name="nsa.rerange_output",
        module=NSA_UTILS,
        function="cp_all_gather_rerange_output",
        output="output_tensor",
        input="input_tensor",
        group="get_attention_cp_group()",
        first=R("0.5.9"),
        last=R("0.5.10"),
        fixed_in=R("0.5.9"),
        fixed_by="sglang PR #17756 (0.5.9)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
    Target(
        name="cp_utils.reorganized",
        module=CP_UTILS,
        function="cp_all_gather_reorganized_into_tensor",
        output="input_tensor_full",
        input="input_tensor",
        group="get_attention_cp_group()",
        first=R("0.5.10"),
        last=R("0.5.19"),
        fixed_in=R("0.5.11"),
        fixed_by="sglang PR #22914 (0.5.11)",
        drop_when="sglang >= 0.5.11",
        uniform=("total_len", "cp_size"),
        uniform_why=REORGANIZED_UNIFORM_WHY,
    ),
    Target(
        name="cp_utils.reorganized_kv_cache",
        module=CP_UTILS,
        function="cp_all_gather_reorganized_into_tensor_kv_cache",
        output="input_tensor_full",
        input="input_tensor",
        group="get_attention_cp_group()",
        first=R("0.5.10"),
        last=R("0.5.19"),
        fixed_in=R("0.5.12"),
        fixed_by="sglang PR #24040 (0.5.12)",
        drop_when="sglang >= 0.5.12",
        uniform=("total_len", "cp_size"),
        uniform_why=REORGANIZED_UNIFORM_WHY,
    ),
    Target(
        name="cp_utils.rerange_output",
        module=CP_UTILS,
        function="cp_all_gather_rerange_output",
        output="output_tensor",
        input="input_tensor",
        group="get_attention_cp_group()",
        first=R("0.5.11"),
        last=R("0.5.19"),
        fixed_in=R("0.5.11"),
        fixed_by="sglang PR #22914 (0.5.11)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
    Target(
        name="cp.zigzag",
        module="sglang.srt.layers.cp.zigzag",
        function="ZigzagCPStrategy._all_gather_reorganized",
        output="gathered",
        input="x",
        group="group",
        first=R("0.5.14"),
        last=R("0.5.23"),
        fixed_in=R("0.5.14"),
        fixed_by="written with the context (CP-v2, 0.5.14)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
    Target(
        name="cp.interleave",
        module="sglang.srt.layers.cp.interleave",
        function="InterleaveCPStrategy._gather_interleaved_tensor",
        output="gathered",
        input="padded_x",
        group="get_parallel().attn_cp_group",
        first=R("0.5.17"),
        last=R("0.5.23"),
        fixed_in=R("0.5.17"),
        fixed_by="written with the context (CP-v2, 0.5.17)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
    Target(
        name="cp.interleave_gather",
        module="sglang.srt.layers.cp.interleave",
        function="attn_cp_interleave_gather",
        output="gathered",
        input="hidden_states",
        group="get_parallel().attn_cp_group",
        first=R("0.5.22"),
        last=R("0.5.23"),
        fixed_in=R("0.5.22"),
        fixed_by="written with the context (0.5.22)",
        drop_when=WRITTEN_WITH_CONTEXT,
    ),
)

POOL_FIX = PoolFix(
    name="pool.attention_cp_registration",
    module=SYMMETRIC_CONTEXT_MODULE,
    context_class="SymmetricMemoryContext",
    first=R("0.5.6"),
    last=R("0.5.11"),
    fixed_by="sglang PR #21392 (0.5.12)",
    drop_when="sglang >= 0.5.12",
)


def is_supported(release: Release) -> bool:
    return FIRST_SUPPORTED <= release <= LAST_SUPPORTED


def targets_for(release: Release) -> tuple[Target, ...]:
    """The targets whose code exists in ``release`` (patched or reported as upstream)."""
    return tuple(t for t in TARGETS if t.exists_in(release))


def needs_output_patch(release: Release) -> tuple[Target, ...]:
    return tuple(t for t in targets_for(release) if not t.fixed_upstream_in(release))


@dataclass(frozen=True)
class Hook:
    """A place the warm-up or the watchdog attaches to (installed by ``hooks``; logic in ``warmup``/``watchdog``).

    ``feature`` names the switch that turns it on: ``warmup`` (SGLANG_CP_SYMM_WARMUP),
    ``watchdog`` (SGLANG_CP_SYMM_WATCHDOG) or ``report`` (either: the per-rank warm-up
    line needs it as much as the growth count does). The release sweep checks, on
    every published wheel of the supported range, that ``needle`` occurs in
    ``module``'s source (``tests/test_patches_and_sweep.py``).
    """

    name: str
    module: str
    attribute: str
    needle: str
    feature: str
    first: Release
    last: Release
    why: str

    def applies_to(self, release: Release) -> bool:
        return self.first <= release <= self.last

    def wanted(self, settings) -> bool:
        if self.feature == "warmup":
            return settings.warmup
        if self.feature == "watchdog":
            return settings.watchdog
        return settings.warmup or settings.watchdog


#: Where the warm-up and the watchdog attach, per release. sglang's own named warm-up mechanism
#: (``entrypoints/warmup.py``: ``@warmup(name)`` into ``_warmup_registry``, run by http_server's
#: ``lifespan`` through ``execute_warmups`` before the general warm-up marks the server Up) exists in
#: every supported release; the offline ``Engine`` runs no named warm-ups in any of them.
HOOKS = (
    Hook("warmup.named", "sglang.srt.entrypoints.warmup", "warmup", "_warmup_registry", "warmup",
         FIRST_SUPPORTED, LAST_SUPPORTED,
         "registers cp_symm_max_tokens with sglang's own @warmup decorator"),
    Hook("warmup.cli", "sglang.srt.server_args", "ServerArgs.from_cli_args", "def from_cli_args", "warmup",
         FIRST_SUPPORTED, LAST_SUPPORTED,
         "adds cp_symm_max_tokens to --warmups, which the HTTP server runs before it reports ready"),
    Hook("warmup.first_request", "sglang.srt.managers.tokenizer_manager", "TokenizerManager.generate_request",
         "async def generate_request", "warmup", FIRST_SUPPORTED, LAST_SUPPORTED,
         "the offline Engine (and any launch without --warmups) warms up before its first request"),
    Hook("watchdog.rank", "sglang.srt.managers.scheduler", "Scheduler.handle_generate_request",
         "def handle_generate_request", "report", FIRST_SUPPORTED, LAST_SUPPORTED,
         "each rank sees the warm-up requests and their completion marker: the per-rank report"),
    Hook("watchdog.context", SYMMETRIC_CONTEXT_MODULE, "SymmetricMemoryContext", "class SymmetricMemoryContext",
         "watchdog", FIRST_SUPPORTED, LAST_SUPPORTED,
         "__enter__/__exit__ measure every pool growth, before the collective registration"),
)

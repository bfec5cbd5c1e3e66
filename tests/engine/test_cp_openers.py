"""Every context sglang opens on a CP group by name is opened in a module of the register, where the plugin acts.

The plugin leaves sglang's ``SymmetricMemoryContext`` alone and acts where the register's modules open their
contexts (``engine/context_hooks.py``: their ``use_symmetric_memory`` is rebound to an opener there alone). That is
enough only if sglang opens no context of the attention-CP group elsewhere: one opened elsewhere would not be
watched, nor re-pointed at the CP group's own pool by the 0.5.9-0.5.11 pool fix (it would keep sglang's shared pool:
sglang's own behaviour, but not the fix). Here the published wheel of every release 0.5.6-0.5.23, post releases
included (ci/fetch-wheels.sh, .cache/wheels), is read with ``ast`` (nothing imported): every call
``use_symmetric_memory(<group>, ...)`` whose group expression names a CP group (``attention_cp``, ``attn_cp``,
``cp_group``) must lie in a module of ``targets_for(release)``, except the decode-CP gathers of ``layers/dcp``
(0.5.15+): they run on the DCP group, which the plugin neither watches nor routes, and which the race guard holds by
its group name with hooks on the class (``race_guard``). A context whose group arrives as a parameter (``group``) is
not followed: its callers pass the TP or DP groups in every release read here. On 0.5.6-0.5.8 the CP gathers run on
the attention-TP group, which sglang's attention-TP all-reduces use too: those keep sglang's shared pool (as without
the plugin); the pool fix is for the CP gathers, which are the register's own functions there.
"""

import ast
import os
import re

import pytest

from conftest import ROOT
from maint.patches import wheel_reader
from sglang_cp_symm.engine.race_guard import DCP_FROM
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import ATTENTION_CP_GROUP_FROM, FIRST_SUPPORTED, LAST_SUPPORTED, POOL_FIX, targets_for

pytestmark = pytest.mark.release

WHEELS = sorted((ROOT / ".cache" / "wheels").glob("sglang-*.whl"))
CP_GROUP_WORDS = re.compile(r"attention_cp|attn_cp|\bcp_group\b")
#: modules outside the register that open contexts on a CP-like group, and why the plugin need not act there
OUTSIDE = {"sglang.srt.layers.dcp.comm": "decode-CP gathers on the DCP group (held by name by the race guard)"}


def version_of(wheel) -> str:
    return re.match(r"sglang-([0-9][^-]*)-", wheel.name).group(1)


REGISTER = [w for w in WHEELS if FIRST_SUPPORTED <= Release.parse(version_of(w)) <= LAST_SUPPORTED]


def cp_contexts(read, names) -> list:
    """(module, line, group expression) of every ``use_symmetric_memory(...)`` call on a CP-like group."""
    found = []
    for path in names:
        if not path.endswith(".py"):
            continue
        text = read(path)
        if text is None or "use_symmetric_memory" not in text:
            continue
        module = path[:-3].replace("/", ".")
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "use_symmetric_memory" and node.args):
                group = ast.unparse(node.args[0])
                if CP_GROUP_WORDS.search(group):
                    found.append((module, node.lineno, group))
    return found


@pytest.mark.parametrize("wheel", REGISTER or [None], ids=[version_of(w) for w in REGISTER] or ["no-wheels"])
def test_every_cp_context_is_opened_where_the_plugin_binds_its_opener(wheel):
    if wheel is None:
        message = "no wheels of sglang 0.5.6-0.5.23 in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import zipfile

    release = Release.parse(version_of(wheel))
    register = {t.module for t in targets_for(release)}
    names = zipfile.ZipFile(wheel).namelist()
    contexts = cp_contexts(wheel_reader(wheel), names)
    elsewhere = [c for c in contexts if c[0] not in register]
    unexplained = [f"{m}:{line} use_symmetric_memory({group}, ...)" for m, line, group in elsewhere if m not in OUTSIDE]
    assert not unexplained, f"sglang {release} opens CP contexts outside the register's modules: {unexplained}"
    if POOL_FIX.applies_to(release) and release >= ATTENTION_CP_GROUP_FROM:  # the pool fix routes in the register's
        assert not elsewhere, f"sglang {release}: {elsewhere}"  # modules only: no CP context may be opened elsewhere
    if any(m in OUTSIDE for m, _, _ in elsewhere):
        assert release >= DCP_FROM  # the DCP gathers, which the race guard's group names cover from here on
    if release >= ATTENTION_CP_GROUP_FROM:  # the CP gathers have opened their own contexts since attention CP existed
        assert [c for c in contexts if c[0] in register], f"sglang {release}: no CP context in the register's modules"

"""What runs inside sglang's processes: switches, patches, pool, NCCL policy, warm-up, watchdog.

Everything here may be imported by the engine and must never import from
``sglang_cp_symm.tools`` (a test walks the imports). Modules load lazily: the entry
point imports ``plugin`` and ``settings`` only, and the rest once the plugin is on.
"""

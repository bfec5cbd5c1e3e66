"""What runs offline, never inside a server: the command line, the doctor, the CPU rehearsals.

The tools read the engine side (``sglang_cp_symm.engine``) and the register; the
engine side never reads them.
"""

"""Stage A: releases that pin one torch pin one NCCL, and the torch pins no sglang release pins yet
(``maint/pins_table.NEWER_TORCH``) know torch 2.15.0.

Each NCCL pin was read from the torch wheel's metadata (sglang_cp_symm/pins.py's docstring and NEWER_TORCH's
comment say where); ``maint/index_check.py`` warns when the index has a torch newer than these.
"""

from maint.pins_table import NEWER_TORCH
from sglang_cp_symm.pins import PINS


def test_torch_2_15_0_pins_nccl_2_30_7_and_no_sglang_pins_it_yet():
    assert ("2.15.0", "2.30.7", "nvidia-nccl-cu13") in NEWER_TORCH
    assert not {p.torch for p in PINS} & {torch for torch, _, _ in NEWER_TORCH}


def test_releases_that_pin_one_torch_pin_one_nccl():
    by_torch = {}
    for pin in PINS:
        assert by_torch.setdefault(pin.torch, (pin.nccl, pin.nccl_wheel)) == (pin.nccl, pin.nccl_wheel), pin
    assert by_torch  # the table is not empty

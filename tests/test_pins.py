"""Stage A: the torch -> NCCL pins agree with the per-release pins, and know torch 2.15.0.

Each NCCL pin was read from the torch wheel's metadata (sglang_cp_symm/pins.py's docstring says where);
``maint/index_check.py`` warns when the index has a torch newer than ``TORCH_PINS``.
"""

from sglang_cp_symm.pins import PINS, TORCH_PINS


def test_every_release_pin_agrees_with_its_torch_pin():
    by_torch = {p.torch: p for p in TORCH_PINS}
    assert len(by_torch) == len(TORCH_PINS)
    for pin in PINS:
        assert (by_torch[pin.torch].nccl, by_torch[pin.torch].nccl_wheel) == (pin.nccl, pin.nccl_wheel), pin


def test_torch_2_15_0_pins_nccl_2_30_7_and_no_sglang_pins_it_yet():
    (pin,) = [p for p in TORCH_PINS if p.torch == "2.15.0"]
    assert (pin.nccl, pin.nccl_wheel) == ("2.30.7", "nvidia-nccl-cu13")
    assert "2.15.0" not in {p.torch for p in PINS}

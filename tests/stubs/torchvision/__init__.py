"""Stand-in for torchvision, which has no CPU build for torch 2.13.

sglang 0.5.10-0.5.20 run ``from torchvision.io import decode_jpeg`` in
``srt/utils/common.py`` at import time; only image inputs call it, and no code
path of the CP all-gathers does. Calling it here fails loudly.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    from torchvision._unavailable import unavailable

    return unavailable(name)

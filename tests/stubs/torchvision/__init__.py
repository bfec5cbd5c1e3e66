"""Stand-in for torchvision, which has no CPU build for torch 2.13.

sglang 0.5.10-0.5.20 run ``from torchvision.io import decode_jpeg`` in
``srt/utils/common.py`` at import time; only image inputs call it, and no code
path of the CP all-gathers does. Calling it here fails loudly. transformers reads ``__version__`` when the package
has no metadata; 0.26.0 is the torchvision of torch 2.11, the CUDA image's.

The other modules here hold the few names sglang and transformers import at
module level; any other name is a function that fails when called.
"""

__version__ = "0.26.0"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    from torchvision._unavailable import unavailable

    return unavailable(name)

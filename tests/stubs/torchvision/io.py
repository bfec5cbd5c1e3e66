"""Names sglang and transformers import from torchvision.io at module level; calling any fails loudly."""
import enum


class ImageReadMode(enum.Enum):
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4


def _unavailable(*args, **kwargs):
    raise RuntimeError("torchvision stub: image decoding is not available in the CPU test environment")


decode_jpeg = decode_image = read_image = _unavailable


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    from torchvision._unavailable import unavailable

    return unavailable(name)

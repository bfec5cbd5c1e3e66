from . import InterpolationMode  # noqa: F401


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    from torchvision._unavailable import unavailable

    return unavailable(name)

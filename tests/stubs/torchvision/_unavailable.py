"""Any other name a module imports from the stub is a function that fails when called."""


def unavailable(name):
    def fail(*args, **kwargs):
        raise RuntimeError(f"torchvision stub: {name} is not available in the CPU test environment")

    fail.__name__ = name
    return fail

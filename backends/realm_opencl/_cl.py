"""pyopencl, imported once for the whole package, or None where it is not installed.

The entry point must import without pyopencl so that `probe` can report it missing (with the
fix) instead of the plugin failing to load; nothing past `probe` runs without it.
"""

try:
    import pyopencl as cl
    import pyopencl.array as cla
except ImportError:  # devices.probe() says how to install it
    cl = cla = None

__all__ = ["cl", "cla"]

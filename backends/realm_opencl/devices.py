"""Finding OpenCL devices: the cheap probe behind `realm backends`, and device-string selection.

Devices are numbered as ``opencl:P:D``: platform P in ``pyopencl.get_platforms()`` order,
device D in that platform's ``get_devices()`` order (every device type). Plain ``opencl``
picks the first GPU of any platform, else the first CPU device, else the first device.
"""

from __future__ import annotations

from typing import Any

from realm.backend import Availability, DeviceInfo
from realm.errors import BackendUnavailableError

INSTALL_HINT = (
    "install an OpenCL driver (ICD): on Debian/Ubuntu `apt-get install pocl-opencl-icd` for "
    "the CPU, or the GPU vendor's OpenCL driver; in a container without the vendor's .icd file, "
    "register it by hand (docs/opencl.md)"
)


def _import_pyopencl() -> Any:
    try:
        import pyopencl
    except ImportError as exc:
        if exc.name == "pyopencl":  # absent, as opposed to present but broken: say it once
            raise BackendUnavailableError(
                "pyopencl is not installed; pip install pyopencl (the 'opencl' extra of realm), "
                "and an OpenCL driver (docs/opencl.md)"
            ) from exc
        raise BackendUnavailableError(
            f"pyopencl is installed but does not import ({exc}); reinstall it: "
            "pip install --force-reinstall pyopencl"
        ) from exc
    return pyopencl


def enumerate_devices() -> list[tuple[int, int, Any]]:
    """Every (platform index, device index, pyopencl.Device) the installed ICDs offer.

    Raises `BackendUnavailableError` (with how to fix it) when pyopencl is missing or no
    platform has a device; a platform that fails to list its devices is skipped.
    """
    cl = _import_pyopencl()
    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:  # PLATFORM_NOT_FOUND_KHR when no ICD is registered
        raise BackendUnavailableError(f"no OpenCL platform found ({exc}); {INSTALL_HINT}") from exc
    found = []
    for p, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:  # DEVICE_NOT_FOUND: a platform with nothing to offer
            continue
        found.extend((p, d, device) for d, device in enumerate(devices))
    if not found:
        names = ", ".join(p.name.strip() for p in platforms) or "none"
        raise BackendUnavailableError(
            f"OpenCL platforms ({names}) offer no device; {INSTALL_HINT}"
        )
    return found


def is_gpu(device: Any) -> bool:
    import pyopencl as cl

    return bool(device.type & cl.device_type.GPU)


def device_info(p: int, d: int, device: Any) -> DeviceInfo:
    """How `realm backends` lists one device."""
    name = f"{device.name.strip()} ({device.platform.name.strip()})"
    return DeviceInfo(f"opencl:{p}:{d}", name, kind="gpu" if is_gpu(device) else "cpu",
                      memory_bytes=int(device.global_mem_size))


def probe() -> Availability:
    """Every OpenCL device with its memory, or why there is none. Never raises."""
    try:
        found = enumerate_devices()
        return Availability(True, tuple(device_info(p, d, dev) for p, d, dev in found))
    except BackendUnavailableError as exc:
        return Availability(False, reason=str(exc))
    except Exception as exc:  # a broken driver must not take `realm backends` down
        return Availability(False, reason=f"probing OpenCL failed: {exc!r}; {INSTALL_HINT}")


def select_device(indices: tuple[int, ...]) -> tuple[int, int, Any]:
    """The (platform, device, pyopencl.Device) a device string's indices name.

    ``()`` is plain ``opencl`` (first GPU, else first CPU); ``(P, D)`` is ``opencl:P:D``.
    """
    found = enumerate_devices()
    listing = "; ".join(f"{info.device} = {info.name} [{info.kind}]"
                        for info in (device_info(*f) for f in found))
    if not indices:
        gpus = [f for f in found if is_gpu(f[2])]
        if gpus:
            return gpus[0]
        import pyopencl as cl

        cpus = [f for f in found if f[2].type & cl.device_type.CPU]
        return (cpus or found)[0]
    if len(indices) != 2:
        raise BackendUnavailableError(
            f"OpenCL devices are named 'opencl' or 'opencl:P:D' (platform P, device D), got "
            f"'opencl:{':'.join(map(str, indices))}'; devices here: {listing}"
        )
    for f in found:
        if (f[0], f[1]) == indices:
            return f
    raise BackendUnavailableError(
        f"there is no OpenCL device opencl:{indices[0]}:{indices[1]}; devices here: {listing}"
    )

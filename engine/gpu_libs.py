"""Where the NVIDIA libraries of the GPU providers are, and one line on why one cannot load.

ONNX Runtime's TensorRT provider (``libonnxruntime_providers_tensorrt.so``, ORT 1.31, CUDA 13)
links ``libnvinfer.so.10`` and ``libnvonnxparser.so.10``. ``onnxruntime.preload_dlls()`` covers
CUDA and cuDNN from the ``nvidia-*`` wheels, not TensorRT. pip's TensorRT wheels
(``tensorrt-cu13-libs``, what ``pip install 'featuremaps[tensorrt]'`` pulls) put the libraries in
``site-packages/tensorrt_libs/``, a folder the dynamic loader never searches. So we look there
(and then in the loader's own path) and preload them by absolute path with ``RTLD_GLOBAL``:
ONNX Runtime's later ``dlopen("libnvinfer.so.10")`` then finds the loaded copy, with no
``LD_LIBRARY_PATH``. TensorRT 11 ships ``libnvinfer.so.11``, which this ONNX Runtime cannot load,
so the major version is pinned here and in the extra.

Nothing here needs a GPU: the lookup, the messages and the preload order are tested on a CPU
with a fake package folder.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TRT_MAJOR = 10  # what ONNX Runtime 1.31's TensorRT provider links
# Load order: the parser and the plugins need libnvinfer first.
TRT_LIBS = (f"libnvinfer.so.{TRT_MAJOR}", f"libnvonnxparser.so.{TRT_MAJOR}")
TRT_OPTIONAL = (f"libnvinfer_plugin.so.{TRT_MAJOR}",)
TRT_PACKAGE_DIRS = ("tensorrt_libs",)  # tensorrt-cu12-libs / tensorrt-cu13-libs install this folder
TRT_INSTALL = "pip install 'featuremaps[tensorrt]' (TensorRT 10 for CUDA 13, matching onnxruntime-gpu 1.31)"

CUDA_LIBS = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcufft.so.12", "libcudnn.so.9")
CUDA_INSTALL = "pip install onnxruntime-gpu (it pulls the CUDA 13 and cuDNN 9 wheels), or install CUDA 13 + cuDNN 9"


@dataclass(frozen=True)
class Libraries:
    """The result of a lookup: ``found`` maps a library's soname to the file that provides it
    (an absolute path, or the soname itself when the system loader finds it); ``missing`` lists
    the required ones that nothing provides."""

    what: str
    found: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    install: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        """``libA, libB in FOLDER; libC (system)`` or the reason they are not all there."""
        if not self.ok:
            return self.reason() or ""
        by_folder: dict[str, list[str]] = {}
        for soname, path in self.found.items():
            folder = str(Path(path).parent) if "/" in path else "the system loader's path"
            by_folder.setdefault(folder, []).append(soname)
        return "; ".join(f"{', '.join(names)} in {folder}" for folder, names in by_folder.items())

    def reason(self) -> str | None:
        """One line naming what is missing and the install that provides it; None when complete."""
        if self.ok:
            return None
        return f"{self.what} libraries not found: {', '.join(self.missing)}; {self.install}"


def package_lib_dirs(names: Sequence[str], search_path: Iterable[str] | None = None) -> list[Path]:
    """Folders called ``names`` directly inside each ``sys.path`` entry (site-packages)."""
    out = []
    for entry in (sys.path if search_path is None else search_path):
        for name in names:
            d = Path(entry or ".") / name
            if d.is_dir() and d not in out:
                out.append(d)
    return out


def _system_has(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def find_libraries(what: str, required: Sequence[str], optional: Sequence[str], folders: Sequence[Path],
                   install: str, *, system: bool = True) -> Libraries:
    """Look for each soname in ``folders`` first, then (``system``) through the dynamic loader."""
    found: dict[str, str] = {}
    for soname in (*required, *optional):
        hit = next((d / soname for d in folders if (d / soname).is_file()), None)
        if hit is not None:
            found[soname] = str(hit)
        elif system and _system_has(soname):
            found[soname] = soname
    return Libraries(what, found, tuple(s for s in required if s not in found), install)


def find_tensorrt(search_path: Iterable[str] | None = None, *, system: bool = True) -> Libraries:
    """TensorRT's libraries: pip's ``tensorrt_libs`` folder first, then the system loader."""
    return find_libraries("TensorRT", TRT_LIBS, TRT_OPTIONAL, package_lib_dirs(TRT_PACKAGE_DIRS, search_path),
                          TRT_INSTALL, system=system)


def _nvidia_lib_dirs(search_path: Iterable[str] | None = None) -> list[Path]:
    """``site-packages/nvidia/*/lib`` and ``nvidia/cu13/lib`` (the CUDA wheels' layouts)."""
    out = []
    for base in package_lib_dirs(("nvidia",), search_path):
        for pattern in ("*/lib", "*/*/lib"):
            out += sorted(p for p in base.glob(pattern) if p.is_dir())
    return out


def find_cuda(search_path: Iterable[str] | None = None, *, system: bool = True) -> Libraries:
    """CUDA runtime, cuBLAS, cuFFT and cuDNN as ONNX Runtime 1.31's CUDA provider needs them."""
    return find_libraries("CUDA", CUDA_LIBS, (), _nvidia_lib_dirs(search_path), CUDA_INSTALL, system=system)


def preload(libs: Libraries) -> str | None:
    """Load every found library by path, in order, into the global namespace, so that ONNX
    Runtime's provider finds them by soname. Returns one line when a file exists but cannot be
    loaded (a wrong architecture, a missing dependency), else None."""
    if not libs.ok:
        return libs.reason()
    for soname, path in libs.found.items():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            detail = " ".join(str(e).split())[:200]
            return f"{libs.what} library {soname} was found at {path} but does not load ({detail}); {libs.install}"
    return None


def tensorrt_version(libs: Libraries) -> str | None:
    """``10.13.2`` from ``getInferLibVersion()`` of the libnvinfer found (None if it cannot say)."""
    path = libs.found.get(TRT_LIBS[0])
    if path is None:
        return None
    try:
        fn = ctypes.CDLL(path).getInferLibVersion
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    v = int(fn())  # TensorRT 10: major * 10000 + minor * 100 + patch
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


@dataclass(frozen=True)
class GpuInfo:
    """What the NVIDIA driver says: its CUDA version and each device's name and compute capability."""

    driver_cuda: str | None
    devices: tuple[tuple[str, str], ...]  # (name, "9.0")
    problem: str | None = None


def gpu_info(libcuda: str = "libcuda.so.1") -> GpuInfo:
    """Ask the driver API directly (no CUDA toolkit, no torch): version, devices, capabilities."""
    try:
        cu = ctypes.CDLL(libcuda)
    except OSError:
        return GpuInfo(None, (), "no NVIDIA driver (libcuda.so.1 not found)")
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    if cu.cuInit(0) != 0:
        return GpuInfo(None, (), "the NVIDIA driver is installed but cuInit failed (no GPU visible to this process?)")
    cu.cuDriverGetVersion(ctypes.byref(version))
    cu.cuDeviceGetCount(ctypes.byref(count))
    devices = []
    for i in range(count.value):
        dev, name, major, minor = ctypes.c_int(0), ctypes.create_string_buffer(256), ctypes.c_int(0), ctypes.c_int(0)
        cu.cuDeviceGet(ctypes.byref(dev), i)
        cu.cuDeviceGetName(name, 256, dev)
        cu.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cu.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
        devices.append((name.value.decode(errors="replace"), f"{major.value}.{minor.value}"))
    v = version.value
    return GpuInfo(f"{v // 1000}.{v % 1000 // 10}", tuple(devices), None if devices else "no GPU visible")

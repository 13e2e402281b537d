"""What this machine can run, per provider, and why not: the facts behind ``featuremaps doctor``.

One :class:`Check` per provider of the provider table (its probe's answer plus what a user
needs to act on it: CPU matrix units, the NVIDIA driver and devices, CUDA/cuDNN and TensorRT
libraries with their paths, OpenVINO devices), and what ``auto`` and ``--fast`` would pick here.
Nothing builds a session or touches a GPU beyond the driver's own queries, so it is quick and
safe on any machine; the CLI prints it, or dumps it as JSON for scripts.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

from .choice import Choice, available_providers, choose_backend
from .cpu_features import CpuFeatures, cpu_features
from .gpu_libs import find_cuda, find_tensorrt, gpu_info, tensorrt_version
from .openvino_backend import devices as openvino_devices
from .providers import PROVIDER_TABLE, provider_names


@dataclass(frozen=True)
class Check:
    """One provider: ``ok`` (can run here), ``reason`` (why not, one line naming the fix) and
    ``details`` (name -> value, shown as ``name: value``)."""

    provider: str
    ok: bool
    reason: str | None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    auto: Choice
    fast: Choice
    cpu: CpuFeatures
    versions: dict

    def to_dict(self) -> dict:
        return {"providers": {c.provider: asdict(c) for c in self.checks}, "auto": asdict(self.auto),
                "fast": asdict(self.fast), "cpu": self.cpu.to_dict(), "versions": self.versions}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("onnxruntime", "openvino"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken: doctor reports, it does not fail
            out[name] = None
    return out


def _details(name: str, cpu: CpuFeatures) -> dict:
    if name == "cpu":
        return {"cpu": cpu.summary()}
    if name == "cuda":
        gpu, libs = gpu_info(), find_cuda()
        return {"driver CUDA": gpu.driver_cuda or gpu.problem,
                "devices": ", ".join(f"{n} (compute {cc})" for n, cc in gpu.devices) or "none",
                "libraries": libs.summary()}
    if name == "tensorrt":
        libs = find_tensorrt()
        return {"libraries": libs.summary(),
                "version": tensorrt_version(libs) or "unknown"}
    if name == "openvino":
        try:
            return {"devices": ", ".join(openvino_devices()) or "none"}
        except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not raised
            return {"devices": f"cannot list ({type(e).__name__}: {' '.join(str(e).split())[:120]})"}
    return {}


def diagnose() -> Report:
    """Probe every provider (cheap, no session) and say what ``auto`` and ``--fast`` pick."""
    cpu = cpu_features()
    checks = []
    for name in provider_names():
        reason = PROVIDER_TABLE[name].probe()
        checks.append(Check(name, reason is None, reason, _details(name, cpu)))
    available = available_providers()
    return Report(tuple(checks), choose_backend(False, available=available, cpu=cpu),
                  choose_backend(True, available=available, cpu=cpu), cpu, _versions())

"""What matrix units this CPU has (AMX, AVX-512 VNNI/BF16, AVX2), read once per call.

Throughput of bf16 and int8 CPU inference depends on them more than on the clock: OpenVINO
runs bf16 on AMX tiles or AVX-512 BF16 instructions, int8 on AMX or VNNI; without them it
falls back to f32 arithmetic. Benchmarks and result files record them so that a reader knows
why numbers differ between machines.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# The flags (as /proc/cpuinfo spells them) that decide which fast path a CPU engine can take.
NOTABLE_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512_bf16", "avx512_vnni",
                 "avx_vnni", "avx2", "fma")


@dataclass(frozen=True)
class CpuFeatures:
    """``model`` name, ``flags`` present from :data:`NOTABLE_FLAGS`, logical ``cores``."""

    model: str
    flags: frozenset[str]
    cores: int

    @property
    def amx(self) -> bool:
        return {"amx_tile", "amx_bf16"} <= self.flags

    @property
    def bf16(self) -> bool:
        """Native bf16 matrix work (AMX or AVX-512 BF16)."""
        return self.amx or "avx512_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        """Native int8 dot products (AMX-INT8, AVX-512 VNNI or AVX-VNNI)."""
        return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & self.flags)

    def to_dict(self) -> dict:
        return {"model": self.model, "cores": self.cores, "flags": sorted(self.flags),
                "amx": self.amx, "bf16": self.bf16, "vnni": self.vnni,
                "avx512": "avx512f" in self.flags}

    def summary(self) -> str:
        """One line, e.g. ``AMD EPYC 9B14, 2 cores: AVX-512, bf16 (AVX-512), VNNI, no AMX``."""
        parts = ["AMX" if self.amx else "no AMX", "AVX-512" if "avx512f" in self.flags else "no AVX-512",
                 "bf16" if self.bf16 else "no bf16", "VNNI" if self.vnni else "no VNNI"]
        return f"{self.model}, {self.cores} cores: {', '.join(parts)}"


def parse_cpuinfo(text: str, cores: int = 0) -> CpuFeatures:
    """:class:`CpuFeatures` from the text of ``/proc/cpuinfo`` (first processor's entry)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuFeatures(model or platform.processor() or platform.machine(),
                       frozenset(flags & set(NOTABLE_FLAGS)), cores)


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU; from ``platform`` alone (no flags) where ``cpuinfo`` is unreadable."""
    import os

    cores = os.cpu_count() or 0
    try:
        return parse_cpuinfo(Path(cpuinfo).read_text(errors="replace"), cores)
    except OSError:
        return CpuFeatures(platform.processor() or platform.machine(), frozenset(), cores)

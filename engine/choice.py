"""``auto`` with an opt-in for speed: which engine and math mode to run a model with.

``auto`` stays exact: without ``fast`` it is ONNX Runtime's own order (TensorRT, CUDA, CPU) in
the model's precision. With ``fast`` the user accepts a looser math mode with its own parity
budget (bf16: rel L2 <= 1e-2) and we pick the fastest engine this machine has. The order is
measured (VGG16 taps 0/5/10/17/28 at 224, batch 8, img/s relative to ONNX Runtime fp32):

* 2-core Xeon with AMX (issue 14): OpenVINO int8 3.6x > OpenVINO bf16 2.7x ~ ORT int8 2.7x >
  ORT fp32 1.0x > OpenVINO f32 0.9x.
* 2-core AMD EPYC with AVX-512 BF16 + VNNI, no AMX (bench/results/openvino_bench-224-shared.md,
  loaded machine): ORT int8 3.3x > OpenVINO int8 2.3x > OpenVINO bf16 1.6x > ORT fp32 1.0x ~
  OpenVINO f32 0.95x.

So an fp32 model goes to OpenVINO bf16 on any CPU with bf16 units (AMX or AVX-512 BF16); an
int8 model to OpenVINO only with AMX. Without bf16 units OpenVINO computes in f32 and ONNX
Runtime is as fast or faster.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu_features import CpuFeatures
from .providers import PROVIDER_TABLE


@dataclass(frozen=True)
class Choice:
    """``provider`` for :class:`Extractor`, its ``math_mode``, and the one-line ``reason``."""

    provider: str
    math_mode: str
    reason: str


def choose_backend(fast: bool, *, available: frozenset[str] | set[str], cpu: CpuFeatures,
                   model_precision: str = "fp32") -> Choice:
    """Pick the engine for ``provider="auto"``.

    ``available``: providers that can run here (``tensorrt``, ``cuda``, ``cpu``, ``openvino``);
    ``cpu``: this machine's :class:`CpuFeatures`; ``model_precision``: the export's precision
    (an int8 export is already int8 whichever engine runs it). Without ``fast`` the answer keeps
    the model's arithmetic exact (``math_mode`` ``default`` only on a GPU, where it is ONNX
    Runtime's).
    """
    gpu = next((p for p in ("tensorrt", "cuda") if p in available), None)
    if gpu is not None:
        return Choice(gpu, "default", f"{gpu}: a GPU provider is available (fastest in every mode)")
    if not fast:
        why = "exact fp32" if model_precision == "fp32" else f"the model's {model_precision} as exported"
        hint = " (pass --fast to allow OpenVINO bf16/int8)" if "openvino" in available else ""
        return Choice("cpu", "default", f"cpu (ONNX Runtime): {why}{hint}")
    if "openvino" not in available:
        return Choice("cpu", "default", "cpu (ONNX Runtime): --fast asked for, but openvino is not installed "
                                        "(pip install 'featuremaps[openvino]')")
    if model_precision == "int8":
        if cpu.amx:
            return Choice("openvino", "default", "openvino: int8 QDQ model and this CPU has AMX "
                                                 "(OpenVINO int8 measured 1.35x ONNX Runtime int8 there)")
        return Choice("cpu", "default", "cpu (ONNX Runtime int8): int8 QDQ model and no AMX here "
                                        "(ONNX Runtime int8 measured 1.4x OpenVINO int8 on an AVX-512 VNNI EPYC)")
    if cpu.bf16:
        unit = "AMX" if cpu.amx else "AVX-512 BF16"
        return Choice("openvino", "bf16", f"openvino bf16: --fast and this CPU has {unit} "
                                          "(measured 2.7x ONNX Runtime fp32 with AMX; bf16 parity budget)")
    return Choice("cpu", "default", "cpu (ONNX Runtime fp32): --fast, but this CPU has no bf16 units, "
                                    "so OpenVINO would compute in f32 (0.9x ONNX Runtime)")


def available_providers() -> frozenset[str]:
    """Providers of the provider table that can run on this machine (cheap probes, no session built)."""
    return frozenset(name for name, spec in PROVIDER_TABLE.items() if spec.probe() is None)

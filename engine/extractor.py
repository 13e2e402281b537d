"""Run an exported featuremaps model: batch in, one array per tap out. No torch needed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..export.onnx_export import metadata_from_session
from ..export.taps import Tap
from .preprocess import Preprocessing, load_batch
from .session import make_session, provider_unavailable_reason
from ..errors import ModelFileError

log = logging.getLogger(__name__)


class Extractor:
    """Feature-map extraction from a self-describing exported model.

    Taps, input size and preprocessing come from the model's metadata. ``spin=False`` keeps
    ONNX Runtime's idle threads from busy-waiting between runs (for pipelines that decode on the
    same CPUs). ``provider="openvino"`` runs the same file with OpenVINO on ``device`` (``CPU``,
    ``GPU``, ``NPU``) in ``math_mode`` ``default`` (bf16 where the CPU has it), ``bf16`` or ``fp32``
    (strict); :attr:`math_mode` says which one ran.

    >>> from featuremaps import export_model, Extractor
    >>> import numpy as np
    >>> _ = export_model("0,17", "/tmp/vgg16-doc.onnx", input_size=64)
    >>> with Extractor("/tmp/vgg16-doc.onnx", provider="cpu") as ex:
    ...     maps = ex.run(np.zeros((2, 3, 64, 64), np.float32))
    >>> {k: v.shape for k, v in maps.items()}
    {'features.0': (2, 64, 64, 64), 'features.17': (2, 512, 8, 8)}
    """

    def __init__(self, model_path: str | Path, provider: str = "auto", threads: int | None = None,
                 max_batch: int = 32, spin: bool = True, device: str = "CPU", math_mode: str = "default"):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelFileError(f"model {str(model_path)!r} not found; export one with "
                                    "`featuremaps export -o PATH.onnx`")
        if provider == "openvino":  # --- OpenVINO backend (engine/openvino_backend.py) ---
            from .openvino_backend import OpenVINOSession

            self.session = OpenVINOSession(self.model_path, device=device, precision=math_mode,
                                           threads=threads)
            self.info, self.metadata = self.session.info, self.session.metadata
        else:  # --- ONNX Runtime ---
            size = self._profile_input_size(provider)
            self.session, self.info = make_session(self.model_path, provider, threads=threads, spin=spin,
                                                   input_shape=(3, size, size), max_batch=max_batch)
            self.metadata = metadata_from_session(self.session, self.model_path)
        self.taps: tuple[Tap, ...] = tuple(Tap.from_dict(d) for d in self.metadata["taps"])
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.input_name = self.metadata["input"]
        self.output_names: list[str] = list(self.metadata["outputs"])

    def _profile_input_size(self, provider: str) -> int:
        # Only TensorRT's shape profile needs the size before the session exists; peek at the
        # metadata with a CPU session just then, not on every CPU-only start.
        if provider not in ("auto", "tensorrt") or provider_unavailable_reason("tensorrt") is not None:
            return 224  # unused by the CPU and CUDA providers
        from ..export.onnx_export import read_metadata

        return int(read_metadata(self.model_path)["input_size"])

    @property
    def provider(self) -> str:
        return self.info.provider

    @property
    def math_mode(self) -> str:
        """The arithmetic the model runs in: OpenVINO's reported mode (``fp32``/``bf16``), else the
        export's precision (``fp32``, ``fp16``, ``int8``)."""
        return getattr(self.info, "math_mode", None) or self.metadata.get("precision", "fp32")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w = self.preprocessing.size
        return (3, h, w)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``batch (N, 3, H, W) float32`` (normalized, as :func:`preprocess_bytes` makes it) ->
        ``{output name: (N, C, h, w) array}``, keys in export order (taps, then ``logits``)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            hint = "; add a batch axis with x[None]" if batch.ndim == 3 else ""
            raise ValueError(f"expected a batch of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(batch.shape)}{hint}")
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        if self.info.provider == "openvino":  # OpenVINO backend: returns the dict itself
            return self.session.run(batch)
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch)})
        return dict(zip(self.output_names, outs))

    def run_files(self, paths) -> dict[str, np.ndarray]:
        """Decode, preprocess and run image files as one batch."""
        return self.run(load_batch(paths, self.preprocessing))

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Extractor({str(self.model_path)!r}, provider={self.provider!r}, "
                f"taps={[t.name for t in self.taps]})")

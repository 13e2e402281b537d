"""Options several commands share, each checked at parse time, and the option groups they parse into.

Each command's ``cmd_X(args)`` reads its ``argparse.Namespace`` once into frozen option objects,
one per group (Polygraphy's ``BaseArgs`` idea, kept small): ``--model/--layers/--weights/--seed/
--input-size`` (:func:`add_model_args`) into a :class:`ModelSpec`, a store and its
``--storage-option`` values into a :class:`StoreRef`, and command-specific groups next to their
command. Only ``cmd_X`` and the ``from_args`` constructors see the Namespace, and nothing writes
to it (``tests/cli/test_options_rule.py``); settings that change later (``--resume`` takes the
store's) become a new object by ``dataclasses.replace``. Range checks run as argparse ``type=``
functions, so a bad value is one line and exit status 2 before any work; paths whose check is
cheap (``--weights`` files, image folders, output parents) are checked when the options are read,
before any model is exported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.openvino_backend import MATH_MODES as OV_MATH_MODES
from ..engine.providers import provider_names
from ..engine.store.remote import is_url, local_path
from ..errors import ArgumentError, InputError, WeightsError, require
from ..families import VGG16_DEFAULT_TAPS
from ..export.taps import MODELS
from ..export.zoo import hub_checkpoint_path

DEFAULT_LAYERS = VGG16_DEFAULT_TAPS  # VGG16's; other families have their own (default_taps)
DEFAULT_TAPS_HELP = (f"the family's own: {VGG16_DEFAULT_TAPS} for vgg16, conv1,layer1..layer4 for a ResNet, "
                     "else five convolutions from first to last")
SEED_MAX = 2**32 - 1  # numpy and torch seeds are 32-bit
# VGG halves the input five times (>= 32); at 4096² features.0 alone is 4.3 GB of fp32 per image
INPUT_SIZE_MIN, INPUT_SIZE_MAX = 32, 4096
CHANNELS_MAX = 64  # one figure row; --montage TAP shows every channel of a tap
# beyond this ONNX Runtime and torch refuse the value (>= 2**31) or start one OS thread per unit (a hang)
THREADS_MAX = 1024

# kept for cmd_<name>.py modules written against the old featuremaps/cli.py; raise ArgumentError
CLIError = ArgumentError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``featuremaps CMD: error: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message: str, file=None) -> None:
        """argparse drops an OSError here, so ``--help >/dev/full`` exited 0 having printed nothing;
        let it reach :func:`featuremaps.cli.main`, which makes it one line and exit 2."""
        if message:
            file = file or sys.stderr
            file.write(message)
            file.flush()


# ---------------------------------------------------------------- argparse types (parse time)


def float_in(lo: float, hi: float | None, what: str):
    """An argparse ``type`` accepting finite numbers in ``lo..hi`` (``hi`` None: no upper bound);
    ``nan`` and ``inf`` are refused (they pass every ``<``/``>`` check the wrong way)."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not math.isfinite(x) or x < lo or (hi is not None and x > hi):
            span = f"in {lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"{what} must be a finite number {span}, got {text!r}")
        return x

    parse.__name__ = what
    return parse


def int_in(lo: int, hi: int | None, what: str, why: str = ""):
    """An argparse ``type`` accepting integers in ``lo..hi`` (``hi`` None: no upper bound); ``why``
    (the reason for the bound) follows the range in the message."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            span = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
            reason = f" ({why})" if why and hi is not None and n > hi else ""
            raise argparse.ArgumentTypeError(f"{what} must be {span}{reason}, got {n}")
        return n

    parse.__name__ = what
    return parse


seed_arg = int_in(0, SEED_MAX, "seed")
input_size_arg = int_in(INPUT_SIZE_MIN, INPUT_SIZE_MAX, "input size")
positive_int = int_in(1, None, "value")
threads_arg = int_in(1, THREADS_MAX, "--threads", "more threads than that only contend for the cores")


def file_arg(text: str) -> str:
    """An output *file* path: not an existing folder, in a folder that can be written (its parent is
    created when written)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file path inside it")
    check_writable_parent(Path(text), argparse.ArgumentTypeError)
    return text


def new_file_arg(text: str) -> str:
    """An output file that must not exist yet (``parity --json``): a command never replaces a file
    it did not make (a typo must not turn the model being checked, or a photo, into JSON)."""
    file_arg(text)
    refuse_existing([Path(text)], argparse.ArgumentTypeError)
    return text


def refuse_existing(paths, error=ArgumentError, fix: str = "remove it or name a new file") -> None:
    """Raise ``error`` naming the first of ``paths`` that exists (a dangling link counts)."""
    for path in paths:
        if os.path.lexists(path):
            raise error(f"{str(path)!r} exists and is never overwritten; {fix}")


def check_writable_parent(path: Path, error=ArgumentError) -> None:
    """Raise ``error`` when ``path`` cannot be created: its nearest existing ancestor is a file, or
    a folder this process cannot write into (read-only file system, no permission)."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"cannot write {str(path)!r}: {str(folder)!r} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable (read-only or no "
                    "permission); choose another path")


def write_new_file(path: Path, data: str | bytes) -> None:
    """Create ``path`` holding ``data``; never replace a file. A failed write (disk full, read-only)
    is one :class:`ArgumentError` line and leaves no partial file behind."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "x" if isinstance(data, str) else "xb")
    except FileExistsError:
        raise ArgumentError(f"{str(path)!r} exists and is never overwritten; remove it or name a new file") from None
    except OSError as e:
        raise ArgumentError(f"cannot write {str(path)!r}: {e.strerror or e}; choose a writable path") from None
    try:
        with f:
            f.write(data)
    except OSError as e:
        with contextlib.suppress(OSError):  # we created it: a half-written file is no result
            path.unlink()
        raise ArgumentError(f"cannot write {str(path)!r}: {e.strerror or e}; choose a path with space") from None


@contextlib.contextmanager
def removed_if_failed(path: str | Path):
    """For a command that writes into ``path``: if the command fails (any exception, Ctrl-C
    included), remove the folders on the way to ``path`` that did not exist on entry and are still
    empty, deepest first, so a failed command leaves no empty output folder behind. Folders that
    existed before, or that now hold anything, are never touched."""
    new = [p for p in (Path(path), *Path(path).parents) if not os.path.lexists(p)]  # deepest first
    try:
        yield
    except BaseException:
        for folder in new:
            with contextlib.suppress(OSError):  # not empty, or gone: leave it
                folder.rmdir()
        raise


def store_arg(text: str) -> str:
    """A store's place: a URL (``s3://bucket/f.zarr``, ``gs://...``) as given, else a local folder path."""
    if is_url(text):
        return text
    return folder_arg(local_path(text))


def _storage_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not key.replace("_", "").replace(".", "").isalnum():
        raise argparse.ArgumentTypeError("expected KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000, anon=true)")
    try:
        parsed = json.loads(value)  # true, 3, {"region_name": "eu-west-1"}
    except ValueError:
        parsed = value
    return key.strip(), parsed


def add_storage_args(p) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): explicit fsspec options for store and input URLs."""
    p.add_argument("--storage-option", dest="storage_option", type=_storage_option, action="append", default=None,
                   metavar="KEY=VALUE",
                   help="an fsspec storage option for s3:// and gs:// URLs (repeatable; e.g. endpoint_url=URL, "
                        "anon=true); default: the standard AWS_* / GOOGLE_* environment. Never stored or printed")


@dataclass(frozen=True)
class StoreRef:
    """A store named on the command line: ``where`` (a local path or an ``s3://``/``gs://`` URL)
    and the ``--storage-option`` values for a URL (None: the environment's; kept out of ``repr``,
    they may hold secrets)."""

    where: str
    storage_options: dict | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, dest: str = "store") -> "StoreRef":
        """The store in ``args.<dest>`` with the command's ``--storage-option`` values."""
        given = getattr(args, "storage_option", None)
        return cls(getattr(args, dest), dict(given) if given else None)

    @property
    def is_url(self) -> bool:
        return is_url(self.where)


def redacted_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of ``--storage-option`` replaced (they may hold secrets): what a store
    records and what a printed command shows."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append(a.split("=", 1)[0] + "=***")
            hide = False
        elif a == "--storage-option":
            out.append(a)
            hide = True
        elif a.startswith("--storage-option="):
            out.append("--storage-option=" + a.split("=", 1)[1].split("=", 1)[0] + "=***")
        else:
            out.append(a)
    return out


def folder_arg(text: str) -> str:
    """An output *folder* path: not an existing file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file; give a folder path")
    return text


# ---------------------------------------------------------------- the model spec


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` names: a zoo model (exported on the fly with these settings) or an .onnx file.

    ``layers`` None means the command's own default; ``weights``/``seed`` None mean "what an
    .onnx file's metadata says" (random/0 for a zoo model).
    """

    model: str = "vgg16"
    layers: str | None = None  # None: the family's default taps (families.default_taps)
    weights: str | None = "random"
    seed: int | None = 0
    input_size: int = 224
    logits: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelSpec":
        """The spec ``args`` names; a ``--weights`` file that is not there is one line now, before
        any export (it used to be found only once torch had loaded)."""
        # zoo names are case-insensitive: `VGG16` is vgg16 (one cache file, one that `cache` lists)
        model = args.model if is_onnx_path(args.model) else args.model.lower()
        check_weights_file(args.weights)
        return cls(model=model, layers=args.layers, weights=args.weights, seed=args.seed,
                   input_size=args.input_size, logits=bool(getattr(args, "logits", False)))

    def with_weights_chosen(self) -> "ModelSpec":
        """For a zoo model: ``auto`` (or unset) becomes ``imagenet`` when torchvision's checkpoint is
        already on disk (never a silent 528 MB download), else ``random``; and random weights are
        announced on stderr in one line, because maps of an untrained network must never be a
        surprise. An .onnx file keeps what its metadata says. Call it once, where the model is
        built (it prints the warning)."""
        if self.is_file:
            return self
        weights = self.weights
        if weights in (None, "auto"):
            weights = "imagenet" if imagenet_cached(self.model) else "random"
        spec = dataclasses.replace(self, weights=weights, seed=0 if self.seed is None else self.seed)
        if weights == "random":
            why = "ImageNet weights are not cached; " if self.weights in (None, "auto") else ""
            print(f"featuremaps: WARNING: {self.model} has seeded RANDOM weights (seed {spec.seed}): the maps "
                  f"show an untrained network. {why}use --weights imagenet (needs the checkpoint) or "
                  "--weights PATH.pth", file=sys.stderr)
        return spec

    @property
    def is_file(self) -> bool:
        return is_onnx_path(self.model)


WEIGHTS_NAMES = ("auto", "random", "imagenet")


def check_weights_file(weights: str | None) -> None:
    """``--weights PATH``: a file that is there (the names ``auto|random|imagenet`` and None pass)."""
    if weights is None or weights in WEIGHTS_NAMES or Path(weights).is_file():
        return
    what = "is a folder" if Path(weights).is_dir() else "not found"
    raise WeightsError(f"weights file {weights!r} {what}; pass an existing .pth/.safetensors file, or "
                       "--weights random|imagenet")


def imagenet_cached(model: str) -> bool:
    """Whether torchvision's ImageNet checkpoint for ``model`` is on disk (False without torch)."""
    try:
        return hub_checkpoint_path(model).is_file()
    except ImportError:
        return False


def add_model_args(p: argparse.ArgumentParser, *, layers_default: str | None = None,
                   layers_help: str | None = None, weights_default: str | None = "auto",
                   seed_default: int | None = 0, onnx_file: bool = True) -> None:
    """``--model/--layers/--weights/--seed/--input-size``: the convention every command shares.
    ``onnx_file`` False: ``--model`` takes zoo names only (``export``)."""
    p.add_argument("--model", default="vgg16",
                   help=f"zoo name ({', '.join(MODELS)}" + ("; exported on the fly) or an exported .onnx file "
                                                            if onnx_file else ") ") + "(default: vgg16)")
    p.add_argument("--layers", default=layers_default,
                   help=layers_help or ("taps for a zoo model: indices (0,5,17), features.17 or aliases (conv4_1, "
                                        "relu4_1, pool4); see `featuremaps layers` (default: "
                                        f"{layers_default or DEFAULT_TAPS_HELP})"))
    p.add_argument("--weights", default=weights_default,
                   help="zoo weights: auto (imagenet if torchvision's checkpoint is cached, else random with a "
                        "warning), random (seeded), imagenet, or a .pth/.safetensors state_dict (default: "
                        + (weights_default or "the .onnx metadata's, else auto") + ")")
    p.add_argument("--seed", type=seed_arg, default=seed_default,
                   help=f"seed for --weights random, 0..{SEED_MAX} (default: {seed_default or 0})")
    p.add_argument("--input-size", type=input_size_arg, default=224,
                   help=f"square input size, {INPUT_SIZE_MIN}..{INPUT_SIZE_MAX} (default: 224)")


def provider_choices() -> tuple[str, ...]:
    """``--provider`` choices: ``auto`` plus every provider in the engine's provider table."""
    return ("auto", *provider_names())


_OV_DEVICE = re.compile(r"^(CPU|GPU|NPU)(\.\d+)?$")


def device_arg(text: str) -> int | str:
    """``--device``: a GPU index ``0..63`` (cuda/tensorrt) or an OpenVINO device name (``CPU``,
    ``GPU``, ``GPU.1``, ``NPU``; any case) for ``--provider openvino``. Which one fits the
    provider is checked where the provider is known (``Extractor``), in one line."""
    if text.strip().lstrip("-").isdigit():
        return int_in(0, 63, "--device")(text)
    name = text.strip().upper()
    if not _OV_DEVICE.match(name):
        raise argparse.ArgumentTypeError(f"--device must be a GPU index 0..63 (cuda/tensorrt) or an OpenVINO "
                                         f"device name CPU, GPU, GPU.N or NPU (--provider openvino), got {text!r}")
    return name


def add_math_args(p: argparse.ArgumentParser, *, math_mode: bool = True) -> None:
    """``--device`` (which GPU, or which OpenVINO device), ``--no-tf32`` (strict fp32 on CUDA) and,
    with ``math_mode``, ``--math-mode`` (OpenVINO's arithmetic)."""
    p.add_argument("--device", type=device_arg, default=None, metavar="N|NAME",
                   help="GPU index for cuda/tensorrt (default: 0), or an OpenVINO device (CPU, GPU, NPU) "
                        "for --provider openvino (default: CPU)")
    p.add_argument("--no-tf32", action="store_true",
                   help="strict fp32 on CUDA (use_tf32=0); default: fp32 models run TF32 convolutions on CUDA, "
                        "~4x faster on an H200, rel L2 <= 2e-3")
    if math_mode:
        p.add_argument("--math-mode", choices=OV_MATH_MODES, default="default",
                       help="OpenVINO's arithmetic (--provider openvino): default (bf16 where the CPU has "
                            "AMX/AVX-512 BF16, else fp32), bf16, fp32 (strict; as exact as ONNX Runtime)")


def is_onnx_path(model: str) -> bool:
    return model.endswith(".onnx") or os.sep in model or Path(model).is_file()


def need_export_extra(what: str) -> None:
    """One line naming the extra when torch/torchvision/onnx/onnxscript are missing (base install)."""
    for module in ("torch", "torchvision", "onnx", "onnxscript"):
        require(module, extra="export", what=what)


def check_not_both(image: str | None, store: str | None) -> None:
    """``show IMAGE --store X``: one source of maps, not two."""
    if image is not None and store:
        raise ArgumentError(f"pass IMAGE ({image}) or --store {store}, not both")
    if image is None and not store:
        raise InputError("pass an IMAGE file, or --store OUT.zarr --index I to draw stored maps")

"""WebDataset tar shards for the tests, made with ``tarfile`` from real photos (PIL-encoded).

Layout as WebDataset writes it: per sample ``KEY.jpg`` (or ``.png``) followed by its sidecars
``KEY.cls`` and ``KEY.json``; keys numbered across shards (``000000``, ``000001``, ...), so the
members' names sort in the same order as the shards' rows.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path


def photo_bytes(sample_paths, i: int, width: int = 96) -> tuple[str, bytes]:
    """``(extension, encoded bytes)``: sample photo ``i`` (mod the samples) resized to about
    ``width`` pixels (each ``i`` a different size), JPEG for even ``i`` and PNG for odd."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the engine's probe sets Pillow's global limit to the last --max-pixels
    with Image.open(sample_paths[i % len(sample_paths)]) as im:
        im = im.convert("RGB").resize((width + 3 * i, width * 3 // 4 + i), Image.BILINEAR)
        buf = io.BytesIO()
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return (".jpg" if fmt == "JPEG" else ".png"), buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain (uncompressed) tar at ``path`` holding ``members`` in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            add(tf, name, data)
    return path


def webdataset(sample_paths, folder: Path, shards: int = 3, per_shard: int = 3) -> dict:
    """``folder/{00000..}.tar``, each with ``per_shard`` samples (image + .cls + .json). Returns
    ``{"shards": [paths], "images": [(shard path, member name, bytes)] in row order}``."""
    out = {"shards": [], "images": []}
    for s in range(shards):
        members = []
        for k in range(per_shard):
            key = s * per_shard + k
            ext, data = photo_bytes(sample_paths, key)
            members += [(f"{key:06d}{ext}", data), (f"{key:06d}.cls", str(key % 7).encode()),
                        (f"{key:06d}.json", json.dumps({"key": key}).encode())]
            out["images"].append((folder / f"{s:05d}.tar", f"{key:06d}{ext}", data))
        out["shards"].append(write_shard(folder / f"{s:05d}.tar", members))
    return out


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """``{name: (data offset, size)}`` as ``tarfile`` itself reports them (the test's own oracle)."""
    with tarfile.open(path, "r:") as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers()}

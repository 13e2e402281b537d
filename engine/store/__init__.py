"""The bulk feature store: a Zarr v3 group with one array per tap, indexed like the input list.

One module per concern, as zarr-python lays out its own package:

- :mod:`.core`: :class:`FeatureStore` (open, read, write, commit) and :func:`open_store`
- :mod:`.create`: a new store's attributes and its atomic creation (temporary folder, or upload)
- :mod:`.format`: constants, the attributes (``zarr.json``) and their checks, chunk size limits
- :mod:`.layout`: the arrays the attributes describe, created and checked
- :mod:`.sizing`: rows per chunk, row chunk and shard; whether a batch fits in memory
- :mod:`.paths`: lossless and displayable input paths, read lazily
- :mod:`.lock`: one writer at a time on a local store (``flock``)
- :mod:`.io`: confined, bounded reads of a local store's files
- :mod:`.remote`: stores on object storage (fsspec URLs) and their lease
- :mod:`.chunk_writer`, :mod:`.shards`, :mod:`.shard_format`: writing chunks and shards directly
- :mod:`.verify`: every chunk's checksum, missing chunks, repair
"""

from ...errors import StoreError
from .core import ErrorRow, FeatureStore, open_store
from .format import DTYPES, ERROR, LOCK_NAME, OK, PENDING, STORE_FORMAT, output_shapes
from .sizing import check_batch_memory
from .verify import VerifyReport

__all__ = ["DTYPES", "ERROR", "LOCK_NAME", "OK", "PENDING", "STORE_FORMAT", "ErrorRow", "FeatureStore",
           "StoreError", "VerifyReport", "check_batch_memory", "open_store", "output_shapes"]

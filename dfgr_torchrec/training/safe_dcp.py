"""Reading a DCP checkpoint without running code from it.

``torch.distributed.checkpoint`` stores its ``.metadata`` as a pickle and loads non-tensor
entries with ``torch.load(weights_only=False)``: a checkpoint folder received from someone else
would be code. :class:`SafeReader` unpickles the metadata with an allow-list of the plain data
classes DCP writes there (anything else is refused, naming the class), and :class:`SafePlanner`
loads non-tensor entries with ``weights_only=True``. Use :func:`safe_load` wherever ``dcp.load``
would be called on a folder.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Dict

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from dfgr_torchrec.errors import RunError

# (module, name) pairs DCP's metadata may reference: dataclasses and enums of plain fields,
# torch's dtype / Size / layout and a path. None of them runs anything but a constructor.
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class UnsafeCheckpoint(RunError):
    """A checkpoint file asks to run or build something a checkpoint never holds."""


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, stream, path: str) -> None:
        super().__init__(stream)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpoint(
            f"{self.path}: refused to load: it references {module}.{name}, which a DCP checkpoint's "
            f"metadata never holds (nothing from it was run)"
        )


class SafeReader(FileSystemReader):
    """:class:`FileSystemReader` whose metadata is unpickled with an allow-list (once per reader)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read: Dict[Any, Metadata] = {}

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        if rank not in self._read:
            self._read[rank] = self._read_metadata(rank)
        return self._read[rank]

    def _read_metadata(self, rank: Any) -> Metadata:
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = _MetadataUnpickler(stream, str(path)).load()
            except UnsafeCheckpoint:
                raise
            except Exception as e:  # truncated or not a pickle at all
                raise RunError(f"{path}: not a readable DCP metadata file ({type(e).__name__}: {e})") from None
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpoint(f"{path}: refused to load: it holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """:class:`DefaultLoadPlanner` that loads non-tensor entries with ``weights_only=True``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpoint(
                f"refused to load checkpoint entry {read_item.dest_index.fqn}: {str(e).splitlines()[0]}"
            ) from None
        # as DefaultLoadPlanner.load_bytes, with the value loaded above
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def metadata(path: str) -> Metadata:
    """The DCP metadata of the checkpoint folder ``path``, read safely."""
    return SafeReader(path).read_metadata()


def safe_load(state: Dict[str, Any], path: str, no_dist: bool = False) -> None:
    """``dcp.load(state, checkpoint_id=path)`` with the safe reader and planner.

    The metadata is read first, so a refusal is raised as itself (inside ``dcp.load`` it would be
    caught and retried as per-rank metadata); ``dcp.load`` then reuses what was read.
    """
    reader = SafeReader(path)
    reader.read_metadata()
    dcp.load(state, storage_reader=reader, planner=SafePlanner(), no_dist=no_dist)

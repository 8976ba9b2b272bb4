"""A model handed to a backend as bytes already verified in memory, not as a path to open.

Why: a backend that opens the bundle's files itself reads whatever is on disk at that moment, and OpenVINO even
memory-maps the IR weights, so a file overwritten or truncated under a running service changed every score or
ended the process with SIGBUS (issue 29, point 9). Compiling the bytes that :mod:`edge.bundles.signing` checked
closes both holes: nothing a backend runs is read from the bundle folder after verification.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from edge.errors import BackendError


@dataclass(frozen=True, slots=True)
class ModelBytes:
    """One model's files by name: ``main`` is the ``.xml`` or ``.onnx`` bytes; ``extra`` what it needs next to it
    (an IR's ``.bin``, an ONNX file's external-data files), keyed by file name."""

    name: str
    main: bytes
    extra: Mapping[str, bytes]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def weights(self) -> bytes:
        """The IR's ``.bin`` (same stem as the ``.xml``)."""
        wanted = PurePosixPath(self.name).with_suffix(".bin").name
        if wanted not in self.extra:
            raise BackendError(f"{self.name}: its weights {wanted} are not among the model's files")
        return self.extra[wanted]


def onnx_bytes(model: ModelBytes) -> bytes:
    """The ONNX model as one self-contained serialised graph.

    An ONNX file with external data (weights in side files) cannot be parsed from bytes by the runtimes, which
    would open the side files from disk; their verified bytes are put back into the graph's initializers instead.
    A model without external data is returned as it is.
    """
    if not model.extra:
        return model.main
    import onnx

    graph = onnx.load_model_from_string(model.main)
    for tensor in _initializers(graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {kv.key: kv.value for kv in tensor.external_data}
        location = PurePosixPath(info.get("location", "")).name
        if location not in model.extra:
            raise BackendError(f"{model.name}: external data {info.get('location')!r} of {tensor.name} is not "
                               "among the model's files")
        data = model.extra[location]
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(data) - offset
        if offset < 0 or length < 0 or offset + length > len(data):
            raise BackendError(f"{model.name}: external data of {tensor.name} lies outside {location}")
        tensor.raw_data = data[offset:offset + length]
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return bytes(graph.SerializeToString())


def _initializers(model: Any) -> Iterator[Any]:
    """Every tensor of the graph that can hold external data: initializers and tensor attributes, sub-graphs
    (``If``/``Loop`` bodies) included."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)

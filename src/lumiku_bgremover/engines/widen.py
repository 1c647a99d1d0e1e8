"""An fp32 copy of an ONNX model stored in fp16: what a CPU without fp16 arithmetic runs.

The npm IS-Net files keep their weights in fp16 and compute around them with `Cast`
nodes (each Resize runs in fp32 between two casts), so ONNX Runtime on a CPU spends
time converting. `widen_to_fp32` turns every fp16 tensor (weights, constants, declared
types) into fp32 and drops the casts, which then cast fp32 to fp32. The result is
deterministic: the same input file gives the same bytes, so it can be pinned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["widen_file", "widen_to_fp32"]


def widen_file(source: Path, target: Path) -> None:
    """Write the fp32 copy of the ONNX model at `source` to `target`."""
    import onnx  # noqa: PLC0415 - only weights derivation needs it

    model = onnx.load(str(source))
    widen_to_fp32(model)
    target.write_bytes(model.SerializeToString(deterministic=True))


def widen_to_fp32(model: Any) -> None:
    """Turn `model` (an `onnx.ModelProto`) into fp32 in place, dropping its casts."""
    from onnx import TensorProto  # noqa: PLC0415

    graph = model.graph
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                _widen_tensor(attribute.t)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    _drop_float_casts(graph)


def _widen_tensor(tensor: Any) -> None:
    from onnx import TensorProto, numpy_helper  # noqa: PLC0415

    if tensor.data_type != TensorProto.FLOAT16:
        return
    wide = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(wide, tensor.name))


def _drop_float_casts(graph: Any) -> None:
    """Remove casts between float types (after widening: fp32 to fp32), rewiring their
    readers to the cast's input; a cast that names a graph output becomes an Identity."""
    outputs = {value.name for value in graph.output}
    dropped = [node for node in graph.node if _float_cast(node) and node.output[0] not in outputs]
    renamed = {node.output[0]: node.input[0] for node in dropped}
    kept = [node for node in graph.node if not (_float_cast(node) and node.output[0] in renamed)]
    for node in kept:
        node.input[:] = [_source(renamed, name) for name in node.input]
        if _float_cast(node):  # names a graph output
            node.op_type = "Identity"
            del node.attribute[:]
    del graph.node[:]
    graph.node.extend(kept)


def _float_cast(node: Any) -> bool:
    from onnx import TensorProto  # noqa: PLC0415

    target = next((a.i for a in node.attribute if a.name == "to"), None)
    return bool(node.op_type == "Cast" and target in {TensorProto.FLOAT, TensorProto.FLOAT16})


def _source(renamed: dict[str, str], name: str) -> str:
    while name in renamed:  # a cast of a cast
        name = renamed[name]
    return name

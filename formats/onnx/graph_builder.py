"""A small ONNX graph builder: nodes with generated names, deduplicated constants, initializers that can stream
to one external data file. Built directly with onnx.helper, so exports are deterministic and need no tracing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside the protobuf
EXTERNAL_ALIGNMENT = 4096  # page-aligned offsets let onnxruntime memory-map the weights
CUSTOM_DOMAIN_VERSION = 1  # onnxruntime's contrib ops (com.microsoft) all live in opset 1 of their domain

NUMPY_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}


class ExternalDataWriter:
    """Appends initializer bytes to one data file and returns TensorProtos that point into it."""

    def __init__(self, path: Path):
        self.path = path
        self.location = path.name
        self._fh = path.open("wb")
        self.offset = 0

    def tensor(self, name: str, array: np.ndarray) -> TensorProto:
        pad = (-self.offset) % EXTERNAL_ALIGNMENT
        if pad:
            self._fh.write(b"\0" * pad)
            self.offset += pad
        data = np.ascontiguousarray(array).tobytes()
        self._fh.write(data)
        proto = TensorProto(name=name, data_type=NUMPY_TO_ONNX[array.dtype], dims=list(array.shape))
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(self.offset)), ("length", str(len(data)))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        self.offset += len(data)
        return proto

    def close(self) -> None:
        self._fh.close()


class GraphBuilder:
    """Collects nodes, inputs, outputs and initializers; `op` returns the output name(s) of the new node."""

    def __init__(self, opset: int, external: ExternalDataWriter | None = None):
        self.opset = opset
        self.external = external
        # Initializers are written straight into the final ModelProto: no 1 GB CopyFrom at the end.
        self._model = onnx.ModelProto()
        self.graph = self._model.graph
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._ids = itertools.count()
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set()
        self._domains: set[str] = set()  # custom operator domains used (com.microsoft): each needs an opset import

    def _fresh(self, hint: str) -> str:
        name = f"{hint}_{next(self._ids)}"
        self._names.add(name)
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        """Add one node; `name` prefixes its outputs so the graph stays readable in Netron."""
        prefix = name or op_type
        if attrs.get("domain"):
            self._domains.add(attrs["domain"])
        outs = [self._fresh(f"{prefix}/out{i}" if outputs > 1 else prefix) for i in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, list(inputs), outs, name=self._fresh(f"{prefix}/node"),
                                                **attrs))
        return outs[0] if outputs == 1 else outs

    def op_multi(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        """A node with explicit input slots ("" = optional input left out) and output names ("" = not wanted)."""
        if attrs.get("domain"):
            self._domains.add(attrs["domain"])
        outs = [out or "" for out in outputs]
        self._names.update(o for o in outs if o)
        self.graph.node.append(helper.make_node(op_type, inputs, outs, name=self._fresh(f"{name}/node"), **attrs))
        return outs

    def fresh_name(self, hint: str) -> str:
        """A new unique value name (for op_multi outputs)."""
        return self._fresh(hint)

    def op_to(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        """Add a node writing a fixed (graph output) name."""
        self.graph.node.append(helper.make_node(op_type, inputs, [output], name=self._fresh(f"{output}/node"),
                                                **attrs))
        return output

    def initializer(self, name: str, array: np.ndarray) -> str:
        """A named weight; large ones go to the external data file when one is open."""
        if name in self._names:
            raise ValueError(f"duplicate initializer name {name!r}")
        self._names.add(name)
        array = np.ascontiguousarray(array)
        if self.external is not None and array.nbytes >= EXTERNAL_MIN_BYTES:
            self.graph.initializer.append(self.external.tensor(name, array))
        else:
            tensor = self.graph.initializer.add()
            tensor.name, tensor.data_type = name, NUMPY_TO_ONNX[array.dtype]
            tensor.dims.extend(array.shape)
            tensor.raw_data = array.tobytes()
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A small constant, shared by every node that uses the same value."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def add_input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        self._names.add(name)
        return name

    def add_output(self, name: str, elem_type: int, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, graph_name: str, metadata: dict[str, str], producer: str, version: str) -> onnx.ModelProto:
        """The finished model; the builder must not be used afterwards."""
        self.graph.name = graph_name
        self.graph.input.extend(self.inputs)
        self.graph.output.extend(self.outputs)
        model = self._model
        model.opset_import.append(helper.make_opsetid("", self.opset))
        for domain in sorted(self._domains):
            model.opset_import.append(helper.make_opsetid(domain, CUSTOM_DOMAIN_VERSION))
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
        model.producer_name, model.producer_version = producer, version
        helper.set_model_props(model, metadata)
        return model

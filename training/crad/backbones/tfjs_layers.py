"""Reader for TensorFlow.js models: model.json topology plus the binary weight shards.

A tfjs model keeps its weights as raw little-endian bytes, concatenated over the shard files of
each manifest group, in the order the manifest lists them. Weights may be stored quantized
(uint8/uint16 with a per-tensor min and scale, or float16); `decode_weights` returns every
tensor as float32 (int32 for integer tensors), under the manifest's name.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

# Bytes per element as stored on disk, for unquantized tensors.
_STORED_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1")}
_QUANTIZED_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}


@dataclass
class TfjsModel:
    """A tfjs model as read from disk: its Keras topology (dict) and its weights by name."""

    topology: dict
    weights: dict[str, np.ndarray]
    source: str

    def layers(self) -> list[dict]:
        """Keras layer entries ({class_name, name, config, inbound_nodes}) in topology order."""
        config = self.topology.get("model_config", self.topology)
        inner = config.get("config", {})
        layers = inner.get("layers") if isinstance(inner, dict) else None
        if layers is None:
            raise ValueError(f"{self.source}: topology has no model_config.config.layers (not a layers model?)")
        return layers


def decode_weights(manifest: list[dict], read_shard: Callable[[str], bytes], source: str = "tfjs model") -> dict[str, np.ndarray]:
    """Decode every tensor of a weightsManifest; read_shard(path) returns one shard file's bytes."""
    weights: dict[str, np.ndarray] = {}
    for group_index, group in enumerate(manifest):
        buffer = b"".join(read_shard(path) for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            name = entry["name"]
            shape = [int(d) for d in entry["shape"]]
            count = math.prod(shape)
            quant = entry.get("quantization")
            if quant is not None:
                stored = _QUANTIZED_DTYPES.get(quant["dtype"])
                if stored is None:
                    raise ValueError(f"{source}: weight {name!r} uses unsupported quantization dtype {quant['dtype']!r}")
            else:
                stored = _STORED_DTYPES.get(entry["dtype"])
                if stored is None:
                    raise ValueError(f"{source}: weight {name!r} has unsupported dtype {entry['dtype']!r}")
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buffer):
                raise ValueError(
                    f"{source}: weight group {group_index} ({group['paths']}) is {len(buffer)} bytes, "
                    f"too short for {name!r} at byte {offset} (+{nbytes})"
                )
            raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
            offset += nbytes
            if quant is None:
                array = raw.astype(np.float32 if entry["dtype"] == "float32" else stored.newbyteorder("="))
            elif quant["dtype"] == "float16":
                array = raw.astype(np.float32)
            elif "min" in quant:
                # tfjs affine quantization: value = min + q * scale
                array = (np.float32(quant["min"]) + raw.astype(np.float32) * np.float32(quant["scale"])).astype(np.float32)
            else:
                # newer converters store a zero point instead of a min
                array = ((raw.astype(np.float32) - np.float32(quant.get("zeroPoint", 0))) * np.float32(quant["scale"])).astype(np.float32)
            if name in weights:
                raise ValueError(f"{source}: weight {name!r} appears twice in the manifest")
            weights[name] = array.reshape(shape)
        if offset != len(buffer):
            raise ValueError(
                f"{source}: weight group {group_index} ({group['paths']}) has {len(buffer)} bytes "
                f"but its manifest entries use {offset}: the shards do not match model.json"
            )
    return weights


def load_tfjs_model(model_dir: str) -> TfjsModel:
    """Read <model_dir>/model.json and the shard files it names, next to it."""
    model_json = os.path.join(model_dir, "model.json")
    if not os.path.isfile(model_json):
        raise FileNotFoundError(f"tfjs model: {model_json} does not exist")
    with open(model_json, "r", encoding="utf-8") as f:
        spec = json.load(f)
    if "weightsManifest" not in spec or "modelTopology" not in spec:
        raise ValueError(f"{model_json}: expected keys modelTopology and weightsManifest, found {sorted(spec)}")

    def read_shard(path: str) -> bytes:
        full = os.path.join(model_dir, path)
        if not os.path.isfile(full):
            raise FileNotFoundError(f"{model_json}: weight shard {full} is missing")
        with open(full, "rb") as f:
            return f.read()

    weights = decode_weights(spec["weightsManifest"], read_shard, source=model_json)
    return TfjsModel(topology=spec["modelTopology"], weights=weights, source=model_json)

"""Export a trained checkpoint to the ONNX model file of the contract
(../shared/design/model-contract.md), plus a reference file for the daemon's tests.

Graph: input `image` float32 [N,3,S,S] RGB in [0,1] (normalisation inside), outputs
`anomaly_map` [N,1,S,S] (the 21x21-smoothed map) and `score` [N]; only N is dynamic (the global
grid fixes the feature layout). Opset 17. Two sampling forms of the same weights:
  --sampling gridsample  GridSample nodes (opset >= 16)
  --sampling tent        tent weights + MatMul, no GridSample node (TensorRT-class runtimes)
Before writing, both torch forms are run on the reference inputs and must agree within 1e-5.

Reference file (<model>.reference.json): a few input images at the model's size and the
outputs torch computed for them, as base64 float32 little-endian arrays, so that the daemon's
onnxruntime-node test can check the exported graph within 1e-4.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import warnings
from pathlib import Path

CONTRACT_FORMAT = "1"
DEFAULT_OPSET = 17
FORMS_TOLERANCE = 1e-5
REFERENCE_TOLERANCE = 1e-4
REFERENCE_FORMAT = "crad-reference/1"
DEFAULT_REFERENCE_COUNT = 2


def contract_metadata(detector, extra: dict) -> dict[str, str]:
    """The metadata_props the contract defines, from a detector and its checkpoint's extra."""
    size = detector.input_size
    training = dict(extra.get("training") or {})
    for key in ("selected_epoch", "holdout_loss"):
        if key in extra:
            training[key] = extra[key]
    training["sampling"] = detector.sampling
    if detector.neck_pool > 1:
        training["neck_pool"] = detector.neck_pool
    metadata = {
        "crad.format": CONTRACT_FORMAT,
        "crad.variant": detector.variant,
        "crad.backbone": f"{detector.backbone.name} {detector.backbone.weights_origin}".strip(),
        "crad.input": json.dumps({"height": size, "width": size, "color": "RGB", "range": [0, 1], "resize": "opencv-area"}),
        "crad.classes": json.dumps(list(extra.get("classes") or [])),
        "crad.training": json.dumps(training, sort_keys=True),
    }
    if extra.get("calibration"):
        calibration = extra["calibration"]
        metadata["crad.calibration"] = calibration if isinstance(calibration, str) else json.dumps(calibration, sort_keys=True)
    return metadata


def _set_shape(values, name: str, shape: list) -> None:
    for value in values:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for extent in shape:
                dim = dims.add()
                if isinstance(extent, str):
                    dim.dim_param = extent
                else:
                    dim.dim_value = extent
            return
    raise ValueError(f"exported graph has no {name!r}")


def export_onnx(detector, out_path: str | Path, sampling: str, metadata: dict[str, str], opset: int = DEFAULT_OPSET) -> None:
    """Write the contract's ONNX graph of `detector` in the given sampling form, with metadata."""
    import onnx
    import torch

    if sampling == "gridsample" and opset < 16:
        raise ValueError(f"GridSample needs opset >= 16, got --opset {opset} (or use --sampling tent)")
    detector.set_sampling(sampling)
    detector.eval()
    size = detector.input_size
    dummy = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(out_path.name + f".tmp-{os.getpid()}")
    with torch.no_grad(), warnings.catch_warnings():
        # The detector's shape checks are constant for a traced export; the tracer warns about each.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*shape_type_inference.*")
        torch.onnx.export(
            detector,
            (dummy,),
            str(temporary),
            input_names=["image"],
            output_names=["anomaly_map", "score"],
            dynamic_axes={"image": {0: "N"}, "anomaly_map": {0: "N"}, "score": {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load(str(temporary))
    # The exporter leaves the outputs' fixed dims symbolic (they flow through Resize); the
    # contract states them, so write them down for the daemon's shape check.
    _set_shape(model.graph.output, "anomaly_map", ["N", 1, size, size])
    _set_shape(model.graph.output, "score", ["N"])
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "crad"
    onnx.save(model, str(temporary))
    os.replace(temporary, out_path)


def check_onnx(path: str | Path, sampling: str, input_size: int) -> list[str]:
    """Structural check of an exported file (onnxruntime is not available in Python here):
    onnx.checker, the contract's inputs/outputs with a dynamic batch, opset, metadata, and the
    sampling form's node types. Returns the sorted node types; raises ValueError on a breach."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    problems = []

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in model.graph.input}
    outputs = {o.name: dims(o) for o in model.graph.output}
    if list(inputs) != ["image"] or inputs["image"][1:] != [3, input_size, input_size] or not isinstance(inputs["image"][0], str):
        problems.append(f"input must be image [N,3,{input_size},{input_size}] with a dynamic N, got {inputs}")
    expected_outputs = {"anomaly_map": [1, input_size, input_size], "score": []}
    if sorted(outputs) != sorted(expected_outputs):
        problems.append(f"outputs must be anomaly_map and score, got {list(outputs)}")
    else:
        for name, rest in expected_outputs.items():
            if outputs[name][1:] != rest or not isinstance(outputs[name][0], str):
                problems.append(f"output {name} has shape {outputs[name]}, expected [N,{','.join(map(str, rest))}] with a dynamic N")
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    op_types = sorted({node.op_type for node in model.graph.node})
    if sampling == "tent" and "GridSample" in op_types:
        problems.append("the tent export contains a GridSample node")
    if sampling == "gridsample" and "GridSample" not in op_types:
        problems.append("the gridsample export has no GridSample node")
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    for key in ("crad.format", "crad.variant", "crad.backbone", "crad.input", "crad.classes", "crad.training"):
        if key not in metadata:
            problems.append(f"metadata {key} is missing")
    for key in ("crad.input", "crad.classes", "crad.training", "crad.calibration"):
        if key in metadata:
            try:
                json.loads(metadata[key])
            except ValueError:
                problems.append(f"metadata {key} is not JSON: {metadata[key][:80]!r}")
    if problems:
        raise ValueError(f"{path} (opset {opsets.get('ai.onnx')}): " + "; ".join(problems))
    return op_types


# ---- reference inputs and outputs -------------------------------------------------------------

def _b64_f32(array) -> str:
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def decode_b64_f32(text: str, shape) -> "numpy.ndarray":
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


def synthetic_reference_images(count: int, size: int, seed: int = 0):
    """Deterministic stand-in inputs when no images are given: smooth colour gradients with a
    few bright blobs (not noise, so the maps look like maps)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        channels = []
        for _ in range(3):
            a, b, c = rng.uniform(-0.5, 0.5, 3)
            channels.append(0.5 + a * xx + b * yy + c * xx * yy)
        image = np.stack(channels)
        for _ in range(rng.integers(1, 4)):
            cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.1)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            image = image + blob[None] * rng.uniform(-0.4, 0.4, (3, 1, 1))
        images.append(np.clip(image, 0.0, 1.0).astype(np.float32))
    return np.stack(images), [f"synthetic-{index}" for index in range(count)]


def load_reference_images(paths: list[str], size: int):
    import numpy as np

    from .data import read_image

    images, names = [], []
    for path in paths:
        image = read_image(path, size)
        if image is None:
            raise ValueError(f"reference image {path!r} cannot be read")
        images.append(image)
        names.append(os.path.basename(path))
    return np.stack(images).astype(np.float32), names


def torch_outputs(detector, images, sampling: str):
    import torch

    detector.set_sampling(sampling)
    detector.eval()
    with torch.no_grad():
        anomaly_map, score = detector(torch.from_numpy(images))
    return anomaly_map.numpy(), score.numpy()


def write_reference(path: str | Path, model_name: str, images, names: list[str], anomaly_map, score, sampling: str) -> None:
    reference = {
        "format": REFERENCE_FORMAT,
        "model": model_name,
        "sampling": sampling,
        "tolerance": REFERENCE_TOLERANCE,
        "encoding": "base64 float32 little-endian, row-major",
        "sources": names,
        "image": {"shape": list(images.shape), "data": _b64_f32(images)},
        "anomaly_map": {"shape": list(anomaly_map.shape), "data": _b64_f32(anomaly_map)},
        "score": [float(value) for value in score],
    }
    Path(path).write_text(json.dumps(reference, indent=1) + "\n")


def reference_path_for(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".reference.json")


# ---- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Export a trained checkpoint (best.pt) to the contract's ONNX model file and a reference file."
    parser.add_argument("checkpoint", help="checkpoint written by `crad train` (best.pt) or `crad calibrate`")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. models/demo/crad-demo.onnx")
    parser.add_argument("--sampling", choices=("gridsample", "tent"), default="gridsample", help="GridSample nodes, or the GridSample-free tent/MatMul form (default gridsample)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--calibration", help="JSON file with the contract's crad.calibration object (overrides the checkpoint's)")
    parser.add_argument("--reference-images", nargs="+", metavar="IMAGE", help="images for the reference file (default: synthetic inputs)")
    parser.add_argument("--reference-count", type=int, default=DEFAULT_REFERENCE_COUNT, help="synthetic reference inputs when no images are given (default 2)")
    parser.add_argument("--no-reference", action="store_true", help="do not write <model>.reference.json")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .device import usable_cpus
    from .model import load_detector

    torch.set_num_threads(usable_cpus())

    detector, extra = load_detector(args.checkpoint)
    if args.calibration:
        extra["calibration"] = json.loads(Path(args.calibration).read_text())
    size = detector.input_size
    if args.reference_images:
        images, names = load_reference_images(args.reference_images, size)
    else:
        images, names = synthetic_reference_images(args.reference_count, size)

    # The two sampling forms are one model: refuse to export if they disagree.
    grid_map, grid_score = torch_outputs(detector, images, "gridsample")
    tent_map, tent_score = torch_outputs(detector, images, "tent")
    difference = max(float(np.abs(grid_map - tent_map).max()), float(np.abs(grid_score - tent_score).max()))
    if difference > FORMS_TOLERANCE:
        print(f"error: gridsample and tent forms differ by {difference:.3g} (> {FORMS_TOLERANCE})", file=sys.stderr)
        return 1

    detector.set_sampling(args.sampling)
    metadata = contract_metadata(detector, extra)
    export_onnx(detector, args.out, args.sampling, metadata, args.opset)
    op_types = check_onnx(args.out, args.sampling, size)
    report = {
        "model": str(args.out),
        "bytes": os.path.getsize(args.out),
        "sampling": args.sampling,
        "forms_max_difference": difference,
        "node_types": op_types,
        "calibrated": "crad.calibration" in metadata,
    }
    if not args.no_reference:
        anomaly_map, score = (grid_map, grid_score) if args.sampling == "gridsample" else (tent_map, tent_score)
        reference = reference_path_for(args.out)
        write_reference(reference, Path(args.out).name, images, names, anomaly_map, score, args.sampling)
        report["reference"] = str(reference)
        report["reference_scores"] = [float(s) for s in score]
    print(json.dumps(report, indent=1))
    return 0

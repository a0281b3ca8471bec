"""Export a trained checkpoint to the ONNX model file of the contract
(../shared/design/model-contract.md), plus a reference file for the daemon's tests.

Graph: input `image` float32 [N,3,S,S] RGB in [0,1] (normalisation inside), outputs
`anomaly_map` [N,1,S,S] (the 21x21-smoothed map) and `score` [N]; only N is dynamic (the global
grid fixes the feature layout). Opset 17. Two sampling forms of the same weights:
  --sampling gridsample  GridSample nodes (opset >= 16)
  --sampling tent        tent weights + MatMul, no GridSample node (TensorRT-class runtimes)
Before writing, both torch forms are run on the reference inputs and must agree within 1e-5 of
each output's scale (see `output_tolerance`): raw scores of real models are in the tens, where
float32 rounding alone differs by more than 1e-5 absolute.

Input forms (--input-form; contract formats 1 and 2):
  float  `image` float32 [N,3,S,S] RGB in [0,1] (format 1, the default)
  uint8  `image` uint8 [N,S,S,3] BGR in [0,255], as OpenCV delivers a resized frame (format 2):
         the float graph behind a prefix that flips BGR->RGB, transposes NHWC->NCHW, casts and
         divides by 255, so the daemon hands over its resized bytes without converting them.
`--from-onnx model.onnx --input-form uint8` converts an exported float model by the same graph
surgery, keeping every metadata key (only crad.format and crad.input change).

Reference file (<model>.reference.json): a few input images at the model's size and the
outputs torch computed for them, as base64 float32 little-endian arrays (uint8 BGR NHWC images
for the uint8 form, whose outputs are those of the images' exact /255 values), so that the
daemon's onnxruntime-node test can check the exported graph within 1e-4 of each output's scale.
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
DEFAULT_SAMPLING = "gridsample"
# Relative tolerances, applied per output by `output_tolerance`.
FORMS_TOLERANCE = 1e-5
REFERENCE_TOLERANCE = 1e-4
TOLERANCE_RULE = "max |a - b| <= tolerance x max(1, largest |value| of the output), per output"
OUTPUTS = ("anomaly_map", "score")
REFERENCE_FORMAT = "crad-reference/1"
DEFAULT_REFERENCE_COUNT = 2

INPUT_FORMS = ("float", "uint8")
# The float form stays format 1, so that daemons which predate the uint8 form still read it.
UINT8_CONTRACT_FORMAT = "2"
UINT8_INPUT = {"dtype": "uint8", "layout": "NHWC", "color": "BGR", "range": [0, 255]}
UINT8_REFERENCE_FORMAT = "crad-reference/2"
# The unchanged float graph's input, once the uint8 prefix feeds it.
FLOAT_IMAGE = "image_float_rgb_nchw"
PREFIX_NAME = "crad_uint8_input"


class ExportError(ValueError):
    """A request the exporter refuses (wrong source file, options that do not go together)."""


def output_tolerance(expected, actual, tolerance: float) -> float:
    """The largest difference allowed between two computations of one output: `tolerance`
    times the output's scale, its largest magnitude in either, but never below 1 (so outputs
    under 1 keep `tolerance` as an absolute bound). float32 rounding grows with the values: a raw
    score of 60 is only held to about 4e-6, so an absolute 1e-5 refuses real models for noise,
    while a one-pixel shift of a grid changes the outputs by a sizeable fraction of their scale."""
    import numpy as np

    scale = max(1.0, float(np.abs(expected).max(initial=0.0)), float(np.abs(actual).max(initial=0.0)))
    return tolerance * scale


def compare_outputs(expected: dict, actual: dict, tolerance: float) -> dict[str, dict[str, float]]:
    """{output: {"difference", "allowed"}} for the anomaly map and the score of two computations
    of the same model ({"anomaly_map": array, "score": array} each)."""
    import numpy as np

    result = {}
    for name in OUTPUTS:
        a = np.asarray(expected[name], dtype=np.float64)
        b = np.asarray(actual[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} differ")
        result[name] = {"difference": float(np.abs(a - b).max(initial=0.0)), "allowed": output_tolerance(a, b, tolerance)}
    return result


def breaches(comparison: dict[str, dict[str, float]]) -> list[str]:
    """The outputs of a `compare_outputs` result that differ by more than allowed, as text."""
    return [f"{name} by {c['difference']:.3g} (allowed {c['allowed']:.3g})" for name, c in comparison.items() if c["difference"] > c["allowed"]]


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


def uint8_form_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The uint8 form's metadata from the float form's: format 2 and crad.input declaring uint8
    BGR NHWC in [0,255]; every other key as it was."""
    converted = dict(metadata)
    converted["crad.format"] = UINT8_CONTRACT_FORMAT
    converted["crad.input"] = json.dumps({**json.loads(metadata["crad.input"]), **UINT8_INPUT})
    return converted


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


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _metadata(model) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def _set_metadata(model, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _graph_inputs(model) -> list:
    """Inputs to feed (older IR versions also list the initializers as inputs)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _save_atomically(model, out_path: str | Path) -> None:
    import onnx

    from .files import atomic_open

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_path) as file:
        onnx.save(model, file)


def _prefix(step: str) -> str:
    return f"{PREFIX_NAME}/{step}"


def to_uint8_form(model):
    """The uint8 form of a float-form contract model, by graph surgery: a new input `image` uint8
    [N,S,S,3] BGR -> Transpose to NCHW -> Gather channels [2,1,0] (BGR->RGB, whole planes) ->
    Cast -> Div 255 -> the float graph, unchanged, whose input it was. Metadata: every key kept,
    crad.format and crad.input switched to the uint8 form. Raises ExportError naming what is
    wrong when `model` is not a float-form CRAD model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    metadata = _metadata(model)
    inputs = _graph_inputs(model)
    image = next((value for value in inputs if value.name == "image"), None)
    problems = []
    if "crad.format" not in metadata:
        problems.append("it is not a CRAD model (no crad.format metadata)")
    elif metadata["crad.format"] == UINT8_CONTRACT_FORMAT or (image is not None and image.type.tensor_type.elem_type == TensorProto.UINT8):
        problems.append("it is the uint8 input form already")
    elif metadata["crad.format"] != CONTRACT_FORMAT:
        problems.append(f"its crad.format is {metadata['crad.format']!r}, only the float form (format {CONTRACT_FORMAT}) converts")
    else:
        if image is None or len(inputs) != 1:
            problems.append(f"its graph must have the one input 'image', it has {[value.name for value in inputs]}")
        else:
            shape = _dims(image)
            if image.type.tensor_type.elem_type != TensorProto.FLOAT or len(shape) != 4 or shape[1] != 3 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
                problems.append(f"its input 'image' must be float32 [N,3,H,W] with a fixed H and W, got elem type {image.type.tensor_type.elem_type} {shape}")
        try:
            json.loads(metadata.get("crad.input", ""))
        except ValueError:
            problems.append("its crad.input metadata is missing or not JSON")
        names = {name for node in model.graph.node for name in (*node.input, *node.output)} | {tensor.name for tensor in model.graph.initializer}
        if FLOAT_IMAGE in names or any(name.startswith(PREFIX_NAME + "/") for name in names):
            problems.append(f"its graph already uses the names {FLOAT_IMAGE!r} or {PREFIX_NAME}/...")
        if any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for node in model.graph.node for attribute in node.attribute):
            problems.append("its graph has subgraphs (If/Loop/Scan), which this conversion does not rewrite")
    if problems:
        raise ExportError("cannot convert to the uint8 input form: " + "; ".join(problems))

    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == "image":
                node.input[index] = FLOAT_IMAGE
    batch, _, height, width = _dims(image)
    prefix = [
        helper.make_node("Transpose", ["image"], [_prefix("bgr_nchw")], name=_prefix("Transpose"), perm=[0, 3, 1, 2]),
        helper.make_node("Gather", [_prefix("bgr_nchw"), _prefix("bgr_to_rgb")], [_prefix("rgb_nchw")], name=_prefix("Gather"), axis=1),
        helper.make_node("Cast", [_prefix("rgb_nchw")], [_prefix("rgb_nchw_float")], name=_prefix("Cast"), to=TensorProto.FLOAT),
        helper.make_node("Div", [_prefix("rgb_nchw_float"), _prefix("255")], [FLOAT_IMAGE], name=_prefix("Div")),
    ]
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), _prefix("bgr_to_rgb")),
        numpy_helper.from_array(np.array(255, dtype=np.float32), _prefix("255")),
    ])
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in graph.input:
        if value.name == "image":
            value.CopyFrom(helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, height, width, 3]))
    _set_metadata(converted, uint8_form_metadata(metadata))
    return converted


def run_uint8_prefix(model, images):
    """What the unchanged float graph receives from the uint8 form's prefix nodes for `images`
    (uint8 BGR NHWC), evaluated with numpy from the nodes in the file: the export's own check of
    the prefix, as Python has no onnxruntime here."""
    import onnx
    from onnx import helper, numpy_helper

    np_dtype = getattr(helper, "tensor_dtype_to_np_dtype", None) or onnx.mapping.TENSOR_TYPE_TO_NP_TYPE.__getitem__
    values = {"image": images}
    values.update({tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer if tensor.name.startswith(PREFIX_NAME + "/")})
    for node in model.graph.node:
        if not node.name.startswith(PREFIX_NAME + "/"):
            continue
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        args = [values[name] for name in node.input]
        if node.op_type == "Transpose":
            values[node.output[0]] = args[0].transpose(attributes["perm"])
        elif node.op_type == "Gather":
            values[node.output[0]] = args[0].take(args[1], axis=attributes.get("axis", 0))
        elif node.op_type == "Cast":
            values[node.output[0]] = args[0].astype(np_dtype(attributes["to"]))
        elif node.op_type == "Div":
            values[node.output[0]] = args[0] / args[1]
        else:
            raise ExportError(f"unexpected {node.op_type} node {node.name!r} in the uint8 input prefix")
    if FLOAT_IMAGE not in values:
        raise ExportError(f"the uint8 input prefix does not produce {FLOAT_IMAGE!r}")
    return values[FLOAT_IMAGE]


def check_uint8_prefix(path: str | Path, uint8_images, float_images) -> None:
    """The prefix of the uint8 form in `path` must turn the reference's uint8 images into exactly
    the float images the reference outputs were computed from."""
    import numpy as np
    import onnx

    fed = run_uint8_prefix(onnx.load(str(path)), uint8_images)
    if fed.dtype != np.float32 or fed.shape != float_images.shape or not np.array_equal(fed, float_images):
        raise ExportError(f"{path}: the uint8 input prefix does not reproduce the float inputs of the reference")


def export_onnx(detector, out_path: str | Path, sampling: str, metadata: dict[str, str], opset: int = DEFAULT_OPSET, input_form: str = "float") -> None:
    """Write the contract's ONNX graph of `detector` in the given sampling and input form, with
    metadata (the float form's: the uint8 form converts them)."""
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
    try:
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
    finally:
        temporary.unlink(missing_ok=True)
    # The exporter leaves the outputs' fixed dims symbolic (they flow through Resize); the
    # contract states them, so write them down for the daemon's shape check.
    _set_shape(model.graph.output, "anomaly_map", ["N", 1, size, size])
    _set_shape(model.graph.output, "score", ["N"])
    _set_metadata(model, metadata)
    model.producer_name = "crad"
    if input_form == "uint8":
        model = to_uint8_form(model)
    _save_atomically(model, out_path)


def check_onnx(path: str | Path, sampling: str | None, input_size: int, input_form: str = "float") -> list[str]:
    """Structural check of an exported file (onnxruntime is not available in Python here):
    onnx.checker, the contract's inputs/outputs with a dynamic batch, opset, metadata, the
    sampling form's node types (None: either) and the input form. Returns the sorted node types;
    raises ValueError on a breach."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    problems = []

    inputs = {i.name: _dims(i) for i in _graph_inputs(model)}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    if input_form == "uint8":
        expected_input, elem_type, form_format = [input_size, input_size, 3], onnx.TensorProto.UINT8, UINT8_CONTRACT_FORMAT
    else:
        expected_input, elem_type, form_format = [3, input_size, input_size], onnx.TensorProto.FLOAT, CONTRACT_FORMAT
    shown = ",".join(map(str, expected_input))
    if list(inputs) != ["image"] or inputs["image"][1:] != expected_input or not isinstance(inputs["image"][0], str):
        problems.append(f"input must be image [N,{shown}] with a dynamic N, got {inputs}")
    elif _graph_inputs(model)[0].type.tensor_type.elem_type != elem_type:
        problems.append(f"input image must be {onnx.TensorProto.DataType.Name(elem_type).lower()} for the {input_form} form")
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
    metadata = _metadata(model)
    for key in ("crad.format", "crad.variant", "crad.backbone", "crad.input", "crad.classes", "crad.training"):
        if key not in metadata:
            problems.append(f"metadata {key} is missing")
    for key in ("crad.input", "crad.classes", "crad.training", "crad.calibration"):
        if key in metadata:
            try:
                json.loads(metadata[key])
            except ValueError:
                problems.append(f"metadata {key} is not JSON: {metadata[key][:80]!r}")
    if metadata.get("crad.format", form_format) != form_format:
        problems.append(f"metadata crad.format is {metadata['crad.format']!r}, the {input_form} form is format {form_format}")
    if input_form == "uint8" and "crad.input" in metadata:
        try:
            declared = json.loads(metadata["crad.input"])
        except ValueError:
            declared = {}  # reported above
        if not isinstance(declared, dict) or any(declared.get(key) != value for key, value in UINT8_INPUT.items()):
            problems.append(f"metadata crad.input must declare {json.dumps(UINT8_INPUT)}, got {metadata['crad.input']}")
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


def to_uint8_bgr_nhwc(images):
    """Float RGB NCHW images in [0,1] as the 8-bit BGR NHWC frames a camera delivers (rounded)."""
    import numpy as np

    return np.ascontiguousarray(np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)[:, ::-1].transpose(0, 2, 3, 1))


def from_uint8_bgr_nhwc(images):
    """uint8 BGR NHWC images as the float form takes them: their exact /255 values, RGB NCHW."""
    import numpy as np

    return np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)


def decode_reference_image(field: dict):
    """A reference file's `image`: float32 RGB NCHW, or uint8 BGR NHWC where it says dtype uint8."""
    import numpy as np

    if field.get("dtype") == "uint8":
        return np.frombuffer(base64.b64decode(field["data"]), dtype=np.uint8).reshape(field["shape"])
    return decode_b64_f32(field["data"], field["shape"])


def write_reference(path: str | Path, model_name: str, images, names: list[str], anomaly_map, score, sampling: str) -> None:
    """Write the reference file; uint8 `images` (the uint8 form's BGR NHWC) make it a
    crad-reference/2 file whose image declares its dtype, layout and colour order."""
    import numpy as np

    if images.dtype == np.uint8:
        image = {"shape": list(images.shape), "dtype": "uint8", "layout": "NHWC", "color": "BGR",
                 "data": base64.b64encode(np.ascontiguousarray(images).tobytes()).decode("ascii")}
        form = {"format": UINT8_REFERENCE_FORMAT, "encoding": "base64 row-major; image uint8, outputs float32 little-endian"}
    else:
        image = {"shape": list(images.shape), "data": _b64_f32(images)}
        form = {"format": REFERENCE_FORMAT, "encoding": "base64 float32 little-endian, row-major"}
    reference = {
        "format": form["format"],
        "model": model_name,
        "sampling": sampling,
        "tolerance": REFERENCE_TOLERANCE,
        "tolerance_rule": TOLERANCE_RULE,
        "encoding": form["encoding"],
        "sources": names,
        "image": image,
        "anomaly_map": {"shape": list(anomaly_map.shape), "data": _b64_f32(anomaly_map)},
        "score": [float(value) for value in score],
    }
    Path(path).write_text(json.dumps(reference, indent=1) + "\n")


def reference_path_for(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".reference.json")


# ---- the command -------------------------------------------------------------------------------

# Options of a checkpoint export that a --from-onnx conversion cannot honour (defaults are None
# so that a given one can be told from an absent one).
CHECKPOINT_ONLY = ("sampling", "opset", "calibration", "reference_images", "reference_count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Export a trained checkpoint (best.pt) to the contract's ONNX model file and a reference file, "
                          "or convert an exported float-form model to the uint8 input form (--from-onnx).")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint written by `crad train` (best.pt) or `crad calibrate` (not with --from-onnx)")
    parser.add_argument("--from-onnx", metavar="MODEL",
                        help="convert this exported float-form model to --input-form uint8 instead of exporting a checkpoint; "
                             "its <model>.reference.json becomes the new model's reference when its images are 8-bit")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. models/demo/crad-demo.onnx")
    parser.add_argument("--input-form", choices=INPUT_FORMS, default="float",
                        help="float: image float32 [N,3,S,S] RGB in [0,1] (contract format 1, the default); "
                             "uint8: image uint8 [N,S,S,3] BGR in [0,255] as OpenCV delivers a resized frame, "
                             "cast and normalised inside the graph (format 2)")
    parser.add_argument("--sampling", choices=("gridsample", "tent"), help=f"GridSample nodes, or the GridSample-free tent/MatMul form (default {DEFAULT_SAMPLING})")
    parser.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--calibration", help="JSON file with the contract's crad.calibration object (overrides the checkpoint's)")
    parser.add_argument("--reference-images", nargs="+", metavar="IMAGE", help="images for the reference file (default: synthetic inputs)")
    parser.add_argument("--reference-count", type=int, help=f"synthetic reference inputs when no images are given (default {DEFAULT_REFERENCE_COUNT})")
    parser.add_argument("--no-reference", action="store_true", help="do not write <model>.reference.json")


def run(args: argparse.Namespace) -> int:
    try:
        if args.from_onnx:
            return _convert(args)
        if args.checkpoint is None:
            raise ExportError("give a checkpoint to export, or --from-onnx MODEL to convert")
        return _export_checkpoint(args)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _export_checkpoint(args: argparse.Namespace) -> int:
    import torch

    from .device import usable_cpus
    from .model import load_detector

    torch.set_num_threads(usable_cpus())
    sampling = args.sampling or DEFAULT_SAMPLING
    opset = args.opset if args.opset is not None else DEFAULT_OPSET
    detector, extra = load_detector(args.checkpoint)
    if args.calibration:
        extra["calibration"] = json.loads(Path(args.calibration).read_text())
    size = detector.input_size
    if args.reference_images:
        images, names = load_reference_images(args.reference_images, size)
    else:
        images, names = synthetic_reference_images(args.reference_count if args.reference_count is not None else DEFAULT_REFERENCE_COUNT, size)
    uint8_images = None
    if args.input_form == "uint8":
        # The uint8 form's reference holds 8-bit images; the outputs are those of their exact /255 values.
        uint8_images = to_uint8_bgr_nhwc(images)
        images = from_uint8_bgr_nhwc(uint8_images)

    # The two sampling forms are one model: refuse to export if they disagree beyond float32
    # rounding at the outputs' scale.
    grid_map, grid_score = torch_outputs(detector, images, "gridsample")
    tent_map, tent_score = torch_outputs(detector, images, "tent")
    forms = compare_outputs({"anomaly_map": grid_map, "score": grid_score}, {"anomaly_map": tent_map, "score": tent_score}, FORMS_TOLERANCE)
    refused = breaches(forms)
    if refused:
        print(f"error: gridsample and tent forms differ: {'; '.join(refused)}; they must agree within {FORMS_TOLERANCE} x max(1, "
              "each output's largest magnitude), beyond float32 rounding they are not the same model", file=sys.stderr)
        return 1
    difference = max(c["difference"] for c in forms.values())

    detector.set_sampling(sampling)
    metadata = contract_metadata(detector, extra)
    export_onnx(detector, args.out, sampling, metadata, opset, args.input_form)
    op_types = check_onnx(args.out, sampling, size, args.input_form)
    report = {
        "model": str(args.out),
        "bytes": os.path.getsize(args.out),
        "sampling": sampling,
        "input_form": args.input_form,
        "forms_max_difference": difference,
        "forms": forms,
        "node_types": op_types,
        "calibrated": "crad.calibration" in metadata,
    }
    if not args.no_reference:
        anomaly_map, score = (grid_map, grid_score) if sampling == "gridsample" else (tent_map, tent_score)
        reference = reference_path_for(args.out)
        write_reference(reference, Path(args.out).name, images if uint8_images is None else uint8_images, names, anomaly_map, score, sampling)
        if uint8_images is not None:
            check_uint8_prefix(args.out, uint8_images, images)
        report["reference"] = str(reference)
        report["reference_scores"] = [float(s) for s in score]
    print(json.dumps(report, indent=1))
    return 0


def _convert(args: argparse.Namespace) -> int:
    import onnx

    given = (["a checkpoint"] if args.checkpoint is not None else []) + [
        "--" + name.replace("_", "-") for name in CHECKPOINT_ONLY if getattr(args, name) is not None]
    if given:
        raise ExportError(f"--from-onnx converts an exported model; {', '.join(given)} belong to a checkpoint export")
    if args.input_form != "uint8":
        raise ExportError("--from-onnx converts a float-form model to --input-form uint8; give --input-form uint8")
    converted = to_uint8_form(onnx.load(args.from_onnx))
    _save_atomically(converted, args.out)
    metadata = _metadata(converted)
    try:
        sampling = json.loads(metadata.get("crad.training") or "{}").get("sampling")
    except (ValueError, AttributeError):
        sampling = None  # check_onnx names the broken key
    op_types = check_onnx(args.out, sampling, _dims(_graph_inputs(converted)[0])[1], "uint8")
    report = {
        "model": str(args.out),
        "from": str(args.from_onnx),
        "bytes": os.path.getsize(args.out),
        "input_form": "uint8",
        "node_types": op_types,
        "calibrated": "crad.calibration" in metadata,
    }
    if not args.no_reference:
        report.update(_convert_reference(args.from_onnx, args.out))
    print(json.dumps(report, indent=1))
    return 0


def _convert_reference(source_path: str | Path, out_path: str | Path) -> dict:
    """The source model's reference for its uint8 form: the same outputs, the images as uint8 BGR
    NHWC; only possible when the source's images are 8-bit values (x/255), as read images are."""
    import numpy as np

    source_reference = reference_path_for(source_path)
    if not source_reference.is_file():
        return {"reference": None, "reference_skipped": f"no {source_reference.name} beside {source_path}"}
    reference = json.loads(source_reference.read_text())
    images = decode_reference_image(reference["image"])
    uint8_images = to_uint8_bgr_nhwc(images) if images.dtype == np.float32 else None
    if uint8_images is None or not np.array_equal(from_uint8_bgr_nhwc(uint8_images), images):
        return {"reference": None, "reference_skipped": f"the images of {source_reference.name} are not 8-bit values (x/255), "
                                                        "so no uint8 image has their outputs; export the checkpoint with --input-form uint8 instead"}
    anomaly_map = decode_b64_f32(reference["anomaly_map"]["data"], reference["anomaly_map"]["shape"])
    out_reference = reference_path_for(out_path)
    write_reference(out_reference, Path(out_path).name, uint8_images, reference["sources"], anomaly_map, reference["score"], reference["sampling"])
    check_uint8_prefix(out_path, uint8_images, images)
    return {"reference": str(out_reference), "reference_scores": reference["score"]}

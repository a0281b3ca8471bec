"""Weight-file readers: tfjs layers (model.json + shards), the nsfwjs JavaScript bundles, TFLite.

Synthetic cases always run; the cases on the real files skip, saying why, when the shared data
set (../shared/data or $CRAD_SHARED_DATA) or the nsfwjs package (scripts/fetch-nsfwjs-weights.sh)
is absent.
"""

import base64
import json
import math

import numpy as np
import pytest

from crad.backbones import BackboneWeightsError
from crad.backbones.nsfwjs import (
    JsLiteralError,
    find_model_dir,
    load_nsfwjs_model,
    parse_js_literal,
    read_bundled_export,
)
from crad.backbones.tfjs_layers import decode_weights, load_tfjs_model
from crad.backbones.tflite import TfliteFormatError, parse_tflite, read_tflite

from shared_weights import CORAL_FILE, V1_DIR, needs_coral, needs_v1



def _nsfwjs_dir():
    try:
        return find_model_dir(None)
    except BackboneWeightsError:
        return None


needs_nsfwjs = pytest.mark.skipif(_nsfwjs_dir() is None,
                                  reason="nsfwjs package absent: run scripts/fetch-nsfwjs-weights.sh")


# ---- JavaScript literal parsing (synthetic) --------------------------------------------------

def test_js_literal_parser_reads_minified_data_literals():
    text = 'x={a:1,"b c":[!0,!1,null,.5,-0,1e-3,-2.5E+2],d:{e:"q\\"u\\u0041\\n"},\'f\':[],g:{}}'
    value, end = parse_js_literal(text, 2)
    assert end == len(text)
    assert value == {"a": 1, "b c": [True, False, None, 0.5, 0, 0.001, -250.0], "d": {"e": 'q"uA\n'},
                     "f": [], "g": {}}


def test_js_literal_parser_refuses_code():
    with pytest.raises(JsLiteralError, match="unsupported value"):
        parse_js_literal("{a:foo()}")
    with pytest.raises(JsLiteralError, match="expected ',' or '}'"):
        parse_js_literal("{a:1 b:2}")


def test_bundled_export_and_quantized_shard_round_trip(tmp_path):
    # A miniature of nsfwjs' layout: a browserify bundle exporting model.json as a JS object and
    # one exporting the shard as base64; uint8 weights dequantize as min + q * scale.
    q = np.array([0, 1, 2, 255, 128, 7], dtype=np.uint8)
    f32 = np.array([1.5, -2.25], dtype="<f4")
    shard = q.tobytes() + f32.tobytes()
    manifest = ('[{paths:["group1-shard1of1"],weights:[{name:"k",shape:[2,3],dtype:"float32",'
                'quantization:{min:-.5,scale:.25,dtype:"uint8"}},{name:"b",shape:[2],dtype:"float32"}]}]')
    wrapper = ('!function(e){module.exports=e()}(function(){return function e(a,n,i){}'
               '({1:[function(e,a,n){a.exports=%s},{}]},{},[1])(1)});')
    model_dir = tmp_path / "dist" / "models" / "mobilenet_v2"
    model_dir.mkdir(parents=True)
    (model_dir / "model.min.js").write_text(
        wrapper % ("{modelTopology:{model_config:{config:{layers:[]}}},weightsManifest:%s}" % manifest))
    (model_dir / "group1-shard1of1.min.js").write_text(wrapper % ('"%s"' % base64.b64encode(shard).decode()))

    assert read_bundled_export(str(model_dir / "model.min.js"))["weightsManifest"][0]["paths"] == ["group1-shard1of1"]
    model = load_nsfwjs_model(str(tmp_path))
    np.testing.assert_allclose(model.weights["k"], (-0.5 + 0.25 * q.astype(np.float32)).reshape(2, 3))
    np.testing.assert_array_equal(model.weights["b"], f32)


def test_nsfwjs_missing_package_names_the_flag_and_the_script(tmp_path):
    with pytest.raises(BackboneWeightsError, match="--backbone-weights") as error:
        find_model_dir(str(tmp_path))
    assert "fetch-nsfwjs-weights.sh" in str(error.value)


# ---- tfjs layers reader (synthetic) ----------------------------------------------------------

def test_tfjs_reader_splits_shards_in_manifest_order(tmp_path):
    a = np.arange(24, dtype="<f4").reshape(2, 3, 4)
    b = np.array([7, -1], dtype="<i4")
    c = np.linspace(-1, 1, 5, dtype="<f4")
    data = a.tobytes() + b.tobytes() + c.tobytes()
    # the group's bytes are split over two shard files at an arbitrary point
    (tmp_path / "g-shard1of2").write_bytes(data[:37])
    (tmp_path / "g-shard2of2").write_bytes(data[37:])
    spec = {"modelTopology": {"model_config": {"config": {"layers": []}}},
            "weightsManifest": [{"paths": ["g-shard1of2", "g-shard2of2"], "weights": [
                {"name": "a", "shape": [2, 3, 4], "dtype": "float32"},
                {"name": "b", "shape": [2], "dtype": "int32"},
                {"name": "c", "shape": [5], "dtype": "float32"}]}]}
    (tmp_path / "model.json").write_text(json.dumps(spec))
    model = load_tfjs_model(str(tmp_path))
    np.testing.assert_array_equal(model.weights["a"], a)
    np.testing.assert_array_equal(model.weights["b"], b)
    np.testing.assert_array_equal(model.weights["c"], c)


def test_tfjs_reader_rejects_shards_that_do_not_match_the_manifest():
    manifest = [{"paths": ["s"], "weights": [{"name": "w", "shape": [4], "dtype": "float32"}]}]
    with pytest.raises(ValueError, match="too short"):
        decode_weights(manifest, lambda _: b"\0" * 12)
    with pytest.raises(ValueError, match="do not match"):
        decode_weights(manifest, lambda _: b"\0" * 20)


def test_tflite_reader_rejects_other_files():
    with pytest.raises(TfliteFormatError, match="not a TFLite file"):
        parse_tflite(b"\x10\0\0\0ONNXgarbage", source="x.onnx")


# ---- the real files ---------------------------------------------------------------------------

@needs_v1
def test_mobilenet_v1_file_holds_the_documented_2601976_values_in_55_groups():
    # The README's 2,601,976 counts every stored value: kernels, BN gamma/beta AND moving
    # mean/variance, and the 1000-class conv_preds kernel + bias.
    model = load_tfjs_model(str(V1_DIR))
    spec = json.loads((V1_DIR / "model.json").read_text())
    assert len(spec["weightsManifest"]) == 55
    assert sum(v.size for v in model.weights.values()) == 2_601_976
    assert model.weights["conv1/kernel"].shape == (3, 3, 3, 24)
    assert model.weights["conv_dw_1/depthwise_kernel"].shape == (3, 3, 24, 1)
    assert model.weights["conv_pw_11/kernel"].shape == (1, 1, 384, 384)
    assert model.weights["conv_preds/kernel"].shape == (1, 1, 768, 1000)
    assert all(np.isfinite(v).all() for v in model.weights.values())
    assert all((model.weights[k] > 0).all() for k in model.weights if k.endswith("moving_variance"))


@needs_coral
def test_coral_tflite_structure_is_mobilenet_v2_with_uint8_tensors():
    model = read_tflite(str(CORAL_FILE))
    ops = [op.op for op in model.operators]
    assert ops.count("CONV_2D") == 36 and ops.count("DEPTHWISE_CONV_2D") == 17 and ops.count("ADD") == 10
    assert ops[-3:] == ["CONV_2D", "RESHAPE", "SOFTMAX"] and ops[-4] == "AVERAGE_POOL_2D"
    image = model.tensor(model.inputs[0])
    assert image.shape == (1, 224, 224, 3) and image.type == "uint8"
    assert model.tensor(model.outputs[0]).shape == (1, 1001)
    stem = model.operators[0]
    assert stem.options["stride_h"] == 2 and stem.options["padding"] == "same"
    assert stem.options["fused_activation_function"] == "relu6"
    kernel = model.tensor(stem.inputs[1])
    assert kernel.shape == (32, 3, 3, 3) and kernel.type == "uint8" and kernel.quantization.scale.size == 1
    bias = model.tensor(stem.inputs[2])
    assert bias.type == "int32"
    # int32 bias scale is input scale x weight scale, as the quantization scheme requires
    assert math.isclose(bias.quantization.scale[0],
                        image.quantization.scale[0] * kernel.quantization.scale[0], rel_tol=1e-5)
    w = model.dequantize(stem.inputs[1])
    q = np.frombuffer(kernel.data, np.uint8).reshape(kernel.shape).astype(np.float64)
    np.testing.assert_allclose(w, (q - kernel.quantization.zero_point[0]) * kernel.quantization.scale[0], rtol=1e-6)


@needs_nsfwjs
def test_nsfwjs_bundle_decodes_to_a_keras_mobilenet_v2_with_a_five_class_head():
    model = load_nsfwjs_model(None)
    w = model.weights
    # 52 BatchNorm layers x 4 tensors, 35 conv + 17 depthwise kernels, 3 dense layers x 2
    assert len(w) == 52 * 4 + 35 + 17 + 6
    assert w["Conv1/kernel"].shape == (3, 3, 3, 32)
    assert w["block_10_project/kernel"].shape == (1, 1, 384, 96)
    assert w["dense_3/kernel"].shape == (128, 5)
    assert all(np.isfinite(v).all() for v in w.values())
    assert all((w[k] >= 0).all() for k in w if k.endswith("moving_variance"))
    frozen = {layer["name"] for layer in model.layers() if layer["config"].get("trainable") is False}
    assert "block_10_project" in frozen and "block_11_expand" not in frozen

"""Weights of the nsfwjs npm package's MobileNetV2 (MIT), read without executing any JavaScript.

nsfwjs bundles its tfjs layers model as browserify modules: dist/models/mobilenet_v2/model.min.js
exports the model.json content as a JavaScript object literal, and group1-shard1of1.min.js exports
the weight shard as a base64 string. Weights are uint8-quantized per tensor (value = min + q*scale).
The network is Keras' MobileNetV2 1.0 (224 px) with ImageNet kernels, frozen up to block 10, with
blocks 11-16 and a dense head fine-tuned by nsfwjs; nsfwjs feeds it RGB scaled to [0, 1] (x/255).

Get the files with scripts/fetch-nsfwjs-weights.sh (a manual `npm pack` into .work/nsfwjs); the
default location is node_modules/nsfwjs, else pass --backbone-weights <package folder>.
"""

from __future__ import annotations

import base64
import os
import re

from . import REPO_ROOT, BackboneWeightsError
from .tfjs_layers import TfjsModel, decode_weights

PINNED_VERSION = "4.4.0"
MODEL_SUBDIR = os.path.join("dist", "models", "mobilenet_v2")
DEFAULT_LOCATIONS = (
    str(REPO_ROOT / "node_modules" / "nsfwjs"),
    str(REPO_ROOT / ".work" / "nsfwjs" / "package"),
)

# browserify wraps each module as {1:[function(require,module,exports){module.exports=VALUE},...
_EXPORT_RE = re.compile(r"\{1:\[function\((\w+),(\w+),(\w+)\)\{\2\.exports=")


class JsLiteralError(ValueError):
    pass


class _JsLiteralParser:
    """Parses the subset of JavaScript literal syntax a minifier emits for JSON-like data:
    objects with bare or quoted keys, arrays, strings, numbers (incl. `.5`, `-0`, `1e-3`),
    true/false/null, and the minified booleans `!0` / `!1`."""

    def __init__(self, text: str, pos: int, source: str):
        self.text = text
        self.pos = pos
        self.source = source

    def fail(self, what: str) -> JsLiteralError:
        snippet = self.text[self.pos:self.pos + 40]
        return JsLiteralError(f"{self.source}: {what} at offset {self.pos} (near {snippet!r})")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def value(self):
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end of text")
        c = self.text[self.pos]
        if c == "{":
            return self.object()
        if c == "[":
            return self.array()
        if c in "\"'":
            return self.string()
        if c == "!":
            digit = self.text[self.pos + 1:self.pos + 2]
            if digit not in ("0", "1"):
                raise self.fail("unsupported '!' expression")
            self.pos += 2
            return digit == "0"  # !0 is true, !1 is false
        if c in "-+.0123456789":
            return self.number()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        raise self.fail("unsupported value (only plain data literals are read, no code)")

    def object(self) -> dict:
        self.pos += 1
        result = {}
        self.skip_space()
        if self.text[self.pos] == "}":
            self.pos += 1
            return result
        while True:
            self.skip_space()
            c = self.text[self.pos]
            if c in "\"'":
                key = self.string()
            else:
                match = re.compile(r"[A-Za-z_$][\w$]*|\d+").match(self.text, self.pos)
                if match is None:
                    raise self.fail("expected an object key")
                key = match.group(0)
                self.pos = match.end()
            self.skip_space()
            if self.text[self.pos] != ":":
                raise self.fail("expected ':' after object key")
            self.pos += 1
            result[key] = self.value()
            self.skip_space()
            c = self.text[self.pos]
            self.pos += 1
            if c == "}":
                return result
            if c != ",":
                self.pos -= 1
                raise self.fail("expected ',' or '}' in object")

    def array(self) -> list:
        self.pos += 1
        result = []
        self.skip_space()
        if self.text[self.pos] == "]":
            self.pos += 1
            return result
        while True:
            result.append(self.value())
            self.skip_space()
            c = self.text[self.pos]
            self.pos += 1
            if c == "]":
                return result
            if c != ",":
                self.pos -= 1
                raise self.fail("expected ',' or ']' in array")

    _NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

    def number(self):
        match = self._NUMBER.match(self.text, self.pos)
        if match is None:
            raise self.fail("malformed number")
        self.pos = match.end()
        token = match.group(0)
        if re.fullmatch(r"[-+]?\d+", token):
            return int(token)
        return float(token)

    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0",
                "\\": "\\", "'": "'", '"': '"', "/": "/"}

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        parts = []
        start = self.pos
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            c = self.text[self.pos]
            if c == quote:
                parts.append(self.text[start:self.pos])
                self.pos += 1
                return "".join(parts)
            if c == "\\":
                parts.append(self.text[start:self.pos])
                esc = self.text[self.pos + 1]
                if esc == "u":
                    parts.append(chr(int(self.text[self.pos + 2:self.pos + 6], 16)))
                    self.pos += 6
                elif esc == "x":
                    parts.append(chr(int(self.text[self.pos + 2:self.pos + 4], 16)))
                    self.pos += 4
                elif esc in self._ESCAPES:
                    parts.append(self._ESCAPES[esc])
                    self.pos += 2
                else:
                    raise self.fail(f"unsupported string escape \\{esc}")
                start = self.pos
            else:
                self.pos += 1


def parse_js_literal(text: str, pos: int = 0, source: str = "javascript") -> tuple[object, int]:
    """Parse one JavaScript data literal starting at text[pos]; returns (value, end offset)."""
    parser = _JsLiteralParser(text, pos, source)
    value = parser.value()
    return value, parser.pos


def read_bundled_export(path: str):
    """The literal a browserify bundle exports from its module 1 (`module.exports=<literal>`)."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    match = _EXPORT_RE.search(text)
    if match is None:
        raise JsLiteralError(f"{path}: no browserify 'module.exports=' found: not an nsfwjs model bundle?")
    value, _ = parse_js_literal(text, match.end(), source=path)
    return value


def find_model_dir(weights: str | None) -> str:
    """Resolve --backbone-weights (package folder, its dist/models/mobilenet_v2, or None for the
    default locations) to the folder holding model.min.js."""
    candidates = [weights] if weights else list(DEFAULT_LOCATIONS)
    for base in candidates:
        for folder in (base, os.path.join(base, MODEL_SUBDIR), os.path.join(base, "package", MODEL_SUBDIR)):
            if os.path.isfile(os.path.join(folder, "model.min.js")):
                return folder
    where = repr(weights) if weights else " or ".join(repr(c) for c in DEFAULT_LOCATIONS)
    raise BackboneWeightsError(
        f"mobilenet-v2-nsfwjs: no nsfwjs MobileNetV2 model ({MODEL_SUBDIR}/model.min.js) under {where}. "
        f"Run scripts/fetch-nsfwjs-weights.sh (npm pack nsfwjs@{PINNED_VERSION} into .work/nsfwjs) or "
        f"pass --backbone-weights <nsfwjs package folder>."
    )


def load_nsfwjs_model(weights: str | None = None) -> TfjsModel:
    """Read the nsfwjs MobileNetV2 layers model (topology + dequantized weights)."""
    folder = find_model_dir(weights)
    model_js = os.path.join(folder, "model.min.js")
    spec = read_bundled_export(model_js)
    if not isinstance(spec, dict) or "modelTopology" not in spec or "weightsManifest" not in spec:
        raise JsLiteralError(f"{model_js}: exported object lacks modelTopology/weightsManifest")

    def read_shard(name: str) -> bytes:
        shard_js = os.path.join(folder, name + ".min.js")
        if not os.path.isfile(shard_js):
            raise FileNotFoundError(f"{model_js}: weight shard {shard_js} is missing")
        encoded = read_bundled_export(shard_js)
        if not isinstance(encoded, str):
            raise JsLiteralError(f"{shard_js}: expected a base64 string export")
        return base64.b64decode(encoded, validate=True)

    weights_by_name = decode_weights(spec["weightsManifest"], read_shard, source=model_js)
    return TfjsModel(topology=spec["modelTopology"], weights=weights_by_name, source=model_js)


NAME = "mobilenet-v2-nsfwjs"
# nsfwjs froze blocks 0..10 (ImageNet kernels) and fine-tuned blocks 11..16 and its head: the
# stride-16 tap is taken at block 10 (96 ch), the last frozen block, so that every tapped kernel
# is ImageNet's; the BatchNorm statistics were re-estimated by nsfwjs on [0, 1] input.
TAP_BLOCKS = (5, 10)
NSFW_CLASSES = 5


def build(weights: str | None = None, random: bool = False, classifier: bool = False):
    """MobileNetV2 1.0 (unfolded BatchNorm) with the nsfwjs package's weights; input RGB in [0, 1]
    (mean 0, std 1). weights: the nsfwjs package folder (default node_modules/nsfwjs or
    .work/nsfwjs/package). classifier=True adds nsfwjs' 5-class head (tests only)."""
    from .mobilenet_v2 import MobileNetV2

    net = MobileNetV2(NAME, folded=False, tap_blocks=TAP_BLOCKS,
                      classifier=[256, 128, NSFW_CLASSES] if classifier else None,
                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    if random:
        return net
    model = load_nsfwjs_model(weights)
    frozen = {layer["name"] for layer in model.layers() if layer["config"].get("trainable") is False}
    for name, _ in net.conv_units():
        if name != "Conv_1" and not name.startswith(("block_11", "block_12", "block_13", "block_14", "block_15",
                                                     "block_16")) and name not in frozen:
            raise ValueError(f"{model.source}: layer {name} is not frozen in this nsfwjs model; the backbone "
                             f"assumes blocks 0..10 keep ImageNet kernels (version {PINNED_VERSION} does)")
    net.load_keras(model)
    net.weights_origin = (f"imagenet kernels, frozen blocks 0-10 of nsfwjs {PINNED_VERSION} MobileNetV2 "
                          f"(uint8-quantized, BN statistics re-estimated by nsfwjs on [0,1] input)")
    return net.freeze()

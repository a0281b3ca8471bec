#!/usr/bin/env bash
# The GPU half of the benchmark: `npm run bench` with onnxruntime's TensorRT and CUDA execution
# providers, one JSON report and one markdown table per provider, so that the GPU rows of the
# README's performance table can be filled the first time a GPU machine is available.
#
# Needs: an NVIDIA GPU (nvidia-smi), CUDA 12 + cuDNN 9 (+ TensorRT 10 for tensorrt) libraries on
# the loader path, and a GPU build of onnxruntime-node (its provider libraries beside the binding):
#   x86-64:  ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node   (needs the internet once)
#   Jetson:  build onnxruntime with --build_nodejs --use_cuda --use_tensorrt (README "GPUs")
# The CPU parts of the daemon (capture, preprocessing, post-processing, MQTT) run as usual.
#
# Usage: bench/gpu/run-device-bench.sh [providers...]     (default: tensorrt cuda)
#   OUT=<dir>      where reports go (default .work/bench/gpu)
#   SECONDS_PER_RUN, BATCHES, CAMERAS   override the bench's --seconds, --batches, --cameras
# TensorRT builds one engine per input shape, and onnxruntime-node 1.30 cannot turn on its
# engine cache (bench/README.md, "GPU"), so each batch size costs a build at warm-up: keep
# BATCHES short for tensorrt.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT="${OUT:-.work/bench/gpu}"
PROVIDERS=("$@")
[ ${#PROVIDERS[@]} -gt 0 ] || PROVIDERS=(tensorrt cuda)
mkdir -p "$OUT"

if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1; then
  echo "run-device-bench: no usable NVIDIA GPU (nvidia-smi failed: $(head -c 300 "$OUT/gpu.txt"))" >&2
  exit 2
fi
echo "GPU: $(cat "$OUT/gpu.txt")" >&2

case "$(uname -m)" in
  x86_64) ARCH=x64 ;;
  aarch64) ARCH=arm64 ;;
  *) echo "run-device-bench: unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac
BIN="node_modules/onnxruntime-node/bin/napi-v6/linux/$ARCH"
for provider in "${PROVIDERS[@]}"; do
  lib="$BIN/libonnxruntime_providers_${provider}.so"
  if [ ! -f "$lib" ]; then
    echo "run-device-bench: $lib is missing: this onnxruntime-node is a CPU build." >&2
    echo "  x86-64: ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node ; Jetson: see README \"GPUs\"." >&2
    exit 3
  fi
done

# Fail here, with onnxruntime's own message, if a provider does not load (a missing CUDA/cuDNN/
# TensorRT library); the daemon would silently fall back to cpu and the table would lie.
for provider in "${PROVIDERS[@]}"; do
  node -e '
    const ort = require("onnxruntime-node");
    ort.InferenceSession.create(process.argv[1], { executionProviders: [process.argv[2]], logSeverityLevel: 3 })
      .then(() => console.error(`provider ${process.argv[2]}: loads`))
      .catch((e) => { console.error(`provider ${process.argv[2]} does not load: ${e.message}`); process.exit(4); });
  ' models/demo/crad-demo.onnx "$provider"
done

for provider in "${PROVIDERS[@]}"; do
  if [ "$provider" = tensorrt ]; then
    batches="${BATCHES:-1,4}"; parts="a,b"          # an engine build per shape; variants would take too long
  else
    batches="${BATCHES:-1,2,4,8}"; parts="a,b,d"
  fi
  echo "== $provider: parts $parts, batches $batches" >&2
  npm run -s bench -- --providers "$provider" --label "gpu-$provider" --parts "$parts" --batches "$batches" \
    --cameras "${CAMERAS:-1,2,4}" --seconds "${SECONDS_PER_RUN:-20}" --no-sweep \
    --out "$OUT/bench-$provider.json" | tee "$OUT/bench-$provider.md"
done
echo "reports: $OUT/bench-*.json and $OUT/bench-*.md" >&2

#!/usr/bin/env bash
# One-command set-up for a fresh Debian 12 machine (run as root, or with sudo available):
# installs the Debian packages the daemon, its tests and the trainer need, then the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  # daemon: OpenCV with GStreamer/FFmpeg for @u4/opencv4nodejs, and the build tools for native addons
  build-essential pkg-config python3 libopencv-dev
  # sd-notify (READY/WATCHDOG/STATUS to systemd) links against libsystemd
  libsystemd-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
  # GigE Vision / USB3 Vision: aravissrc GStreamer element, and the simulated camera used by tests
  libaravis-0.8-0 aravis-tools
  # MQTT broker and clients (tests start their own broker; mosquitto_sub to watch the topics)
  mosquitto mosquitto-clients
  # systemd-analyze verify for the unit test
  systemd
  # the operator console's tests: a real browser (driven by puppeteer-core, never downloaded) and a
  # real Prometheus server scraping the daemon; openssl makes test certificates
  chromium prometheus openssl
  # Sparkplug B tests: an independent decoder generated from the official .proto at test time
  protobuf-compiler python3-protobuf
  # PLC-side journey tests: an independent MQTT 5 client (Eclipse Paho), as a PLC gateway would use
  python3-paho-mqtt
  # the trainer (always run with /usr/bin/python3: these install for Debian's interpreter);
  # only what training/ imports (sklearn's metrics, tqdm's progress bars; scipy's binomial CDF for
  # the FRR bound: sklearn pulls it in too, listed because crad.thresholds imports it itself)
  python3-torch python3-torchvision python3-onnx python3-opencv python3-sklearn
  python3-numpy python3-scipy python3-pytest python3-tqdm
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The Debian package enables a system-wide broker on :1883; the project starts its own.
  $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
  # Likewise Prometheus on :9090: tests start their own on a free port.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# OpenCV is the system one: the package.json autobuild switch is not honoured, the env var is.
export OPENCV4NODEJS_DISABLE_AUTOBUILD=1
export JOBS=max
# onnxruntime-node's install script would download the CUDA/TensorRT libraries (and fail offline);
# the CPU binaries ship in the package, GPU builds are a deployment step (README "GPUs").
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
npm run build
# The trainer's mobilenet-v2-nsfwjs backbone (the demo model's) reads its weights from the nsfwjs npm
# package: fetched here, at set-up, from the npm registry into .work/ (never at run time).
scripts/fetch-nsfwjs-weights.sh >/dev/null
echo "setup: done. Try: npx crad-edge demo"

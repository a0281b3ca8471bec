#!/usr/bin/env bash
# The trainer on a CUDA GPU: the full CRAD head (variant crad, E = 4C) trained on Magnetic Tile
# features by `crad bench` (the README's protocol: the PatchCore baseline on the same features
# comes with it), then epochs per minute and the figures. Nothing is downloaded: the data is read
# in place from ../shared/data/magnetic-tile and the backbone weights from ../shared/data/backbones
# (EfficientNet-B4 when its file is there, else the Coral MobileNetV2). Outputs go under runs/
# (git-ignored): nothing derived from the data is committed.
#
# Needs: an NVIDIA GPU and a CUDA build of PyTorch 2.x with torchvision, onnx, OpenCV, scikit-learn
# and tqdm for $PYTHON (Debian's /usr/bin/python3 has a CPU-only torch 1.13).
# The automatic choice (crad.select): `crad train --select only` first chooses the neck pooling from
# good images and synthetic anomalies, as `crad train` does by default; then `crad bench` trains
# and tests every candidate (neck pool 1 and 3), so the report shows the real ranking beside the
# synthetic one and which candidate the selection took (selection.json, bench-pool-K/).
# Usage: PYTHON=/path/to/python bench/gpu/train-magnetic-tile.sh
#   EPOCHS (default 50, the reference's), MINUTES (budget, default 60), BACKBONE, VARIANT (default
#   crad), BATCH (default 16), OUT (default runs/bench/magnetic-tile-gpu), CANDIDATES (neck pools,
#   default "1,3"; "chosen" trains only the selection's choice)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-python3}"
SHARED="${CRAD_SHARED_DATA:-$(cd .. && pwd)/shared/data}"
OUT="${OUT:-runs/bench/magnetic-tile-gpu}"
if [ -z "${BACKBONE:-}" ]; then
  if compgen -G "$SHARED/backbones/efficientnet-b4/*" > /dev/null; then BACKBONE=efficientnet-b4; else BACKBONE=mobilenet-v2; fi
fi

if ! PYTHONPATH=training "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "train-magnetic-tile: $PYTHON has no usable CUDA (torch.cuda.is_available() is false); set PYTHON to a CUDA PyTorch" >&2
  exit 2
fi
[ -d "$SHARED/magnetic-tile" ] || { echo "train-magnetic-tile: no data at $SHARED/magnetic-tile" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2 || true
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")' >&2

POOLS="${CANDIDATES:-1,3}"
CRAD_SHARED_DATA="$SHARED" PYTHONPATH=training "$PYTHON" -m crad train --device cuda \
  --data "$SHARED/magnetic-tile" --layout magnetic-tile --backbone "$BACKBONE" --variant "${VARIANT:-crad}" \
  --batch-size "${BATCH:-16}" --select only --select-neck-pools "${POOLS/chosen/1,3}" --out "$OUT" --no-progress > /dev/null
CHOSEN=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["chosen"]["neck_pool"])' "$OUT/selection.json")
echo "selection: neck pool $CHOSEN ($OUT/selection.json)" >&2
[ "$POOLS" = chosen ] && POOLS="$CHOSEN"

for pool in ${POOLS//,/ }; do
  CRAD_SHARED_DATA="$SHARED" PYTHONPATH=training "$PYTHON" -m crad bench magnetic-tile --device cuda \
    --backbone "$BACKBONE" --variant "${VARIANT:-crad}" --epochs "${EPOCHS:-50}" --minutes "${MINUTES:-60}" \
    --batch-size "${BATCH:-16}" --neck-pool "$pool" --out "$OUT/bench-pool-$pool" --no-progress
done

"$PYTHON" - "$OUT" "$CHOSEN" ${POOLS//,/ } <<'PY'
import json, sys
out, chosen, pools = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
selection = {c["neck_pool"]: c["synthetic_auroc"] for c in json.load(open(f"{out}/selection.json"))["candidates"]}
for pool in pools:
    summary = json.load(open(f"{out}/bench-pool-{pool}/bench.json"))
    crad = summary["crad"]
    mark = " (chosen)" if pool == chosen else ""
    print(f"neck pool {pool}{mark}: synthetic AUROC {100 * selection[pool]:.1f}; device {summary['device']}: "
          f"{crad['epochs_completed']} epochs in {crad['fit_seconds']:.0f} s = {summary['epochs_per_minute']:.2f} epochs/min "
          f"(best epoch {crad['best_epoch']})")
    for name in ("crad", "patchcore"):
        metrics = summary[name]["metrics"]
        print(" ", name, " ".join(f"{key} {100 * value:.1f}" for key, value in metrics.items() if value is not None),
              f"ms/image {summary[name]['ms_per_image']:.2f}")
PY
echo "report: $OUT/selection.json, $OUT/bench-pool-*/bench.md" >&2

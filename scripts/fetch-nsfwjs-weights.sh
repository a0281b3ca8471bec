#!/usr/bin/env bash
# Fetch the weights of the "mobilenet-v2-nsfwjs" trainer backbone: the nsfwjs npm package (MIT),
# whose MobileNetV2 keeps frozen ImageNet kernels in its early blocks. A deliberate, manual step
# (the trainer never downloads anything): `npm pack` fetches the package tarball from the npm
# registry into .work/nsfwjs (git-ignored), the script checks its pinned checksum, unpacks it and
# prints the folder to pass as --backbone-weights (it is also one of the trainer's default places).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="4.4.0"
SHA1="706017d11e44de0803b73a568819f800a50ae470"  # npm's shasum of nsfwjs-4.4.0.tgz
DEST=".work/nsfwjs"
TARBALL="$DEST/nsfwjs-$VERSION.tgz"
MODEL="$DEST/package/dist/models/mobilenet_v2/model.min.js"

mkdir -p "$DEST"
if [ ! -f "$TARBALL" ]; then
  npm pack "nsfwjs@$VERSION" --pack-destination "$DEST" --loglevel warn >&2
fi
actual="$(sha1sum "$TARBALL" | cut -d' ' -f1)"
if [ "$actual" != "$SHA1" ]; then
  echo "fetch-nsfwjs-weights: $TARBALL has sha1 $actual, expected $SHA1 (nsfwjs@$VERSION); delete it and retry" >&2
  exit 1
fi
if [ ! -f "$MODEL" ]; then
  rm -rf "$DEST/package"
  tar -xzf "$TARBALL" -C "$DEST"
fi
if [ ! -f "$MODEL" ]; then
  echo "fetch-nsfwjs-weights: $MODEL missing after unpacking $TARBALL" >&2
  exit 1
fi
echo "$(pwd)/$DEST/package"

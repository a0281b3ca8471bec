#!/usr/bin/env bash
# Install crad-edge as a systemd service: service user, state and config directories, the unit.
# Usage: sudo systemd/install.sh [--no-start]
# Run from a built checkout (scripts/setup.sh); the unit points at this checkout.
set -euo pipefail
INSTALL_DIR="$(cd "$(dirname "$0")/.." && pwd)"
START=1
[ "${1:-}" = "--no-start" ] && START=0

if [ "$(id -u)" -ne 0 ]; then echo "install.sh: run as root (sudo)" >&2; exit 1; fi
[ -f "$INSTALL_DIR/dist/src/main.js" ] || { echo "install.sh: not built; run scripts/setup.sh first" >&2; exit 1; }
case "$INSTALL_DIR" in
  /home/*|/root/*|/run/user/*)
    # The unit's ProtectHome=yes hides these from the service: install from e.g. /opt/crad-edge.
    echo "install.sh: $INSTALL_DIR is under a home directory, which the hardened unit cannot read; clone to /opt/crad-edge" >&2
    exit 1 ;;
esac

if ! id crad-edge >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/crad-edge --shell /usr/sbin/nologin \
    --user-group --groups video crad-edge
fi
install -d -o crad-edge -g crad-edge -m 0750 /var/lib/crad-edge /var/lib/crad-edge/models
install -d -o root -g crad-edge -m 0770 /etc/crad-edge
if [ ! -f /etc/crad-edge/config.json ]; then
  install -o crad-edge -g crad-edge -m 0640 "$INSTALL_DIR/config/example-gige-line.json" /etc/crad-edge/config.json
  echo "install.sh: wrote /etc/crad-edge/config.json from config/example-gige-line.json: edit it, then"
  echo "            crad-edge config check /etc/crad-edge/config.json"
fi
sed "s#@INSTALL_DIR@#$INSTALL_DIR#g" "$INSTALL_DIR/systemd/crad-edge.service" >/etc/systemd/system/crad-edge.service
systemd-analyze verify /etc/systemd/system/crad-edge.service
systemctl daemon-reload
systemctl enable crad-edge.service
if [ "$START" = 1 ]; then systemctl restart crad-edge.service; fi
echo "install.sh: installed. Logs: journalctl -u crad-edge -f"

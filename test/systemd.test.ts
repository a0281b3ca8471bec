// The unit file: systemd-analyze verify must pass without a single warning, and the unit must
// keep the properties the reliability story depends on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/cleanup.js';

const repo = path.resolve(import.meta.dirname, '..');
const unitText = fs.readFileSync(path.join(repo, 'systemd/crad-edge.service'), 'utf8');

function directives(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) map.set(m[1]!, [...(map.get(m[1]!) ?? []), m[2]!]);
  }
  return map;
}

test('systemd-analyze verify passes on the installed form of the unit, with no warnings', () => {
  const dir = tempDir('unit');
  const unit = path.join(dir, 'crad-edge.service');
  fs.writeFileSync(unit, unitText.replaceAll('@INSTALL_DIR@', repo));
  const run = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  // verify exits 0 even for unknown keys or bad values; it only prints them.
  const complaints = `${run.stdout}${run.stderr}`.split('\n').filter((l) => l.includes('crad-edge.service'));
  assert.deepEqual(complaints, []);
});

test('systemd-analyze verify would catch a broken unit (the check above can fail)', () => {
  const dir = tempDir('unit');
  const unit = path.join(dir, 'crad-edge.service');
  fs.writeFileSync(unit, unitText.replaceAll('@INSTALL_DIR@', repo).replace('Type=notify', 'Type=notifyy'));
  const run = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.match(`${run.stdout}${run.stderr}`, /crad-edge\.service.*Type|service type/i);
});

test('the unit is a watched, restarting, hardened notify service that can reach cameras and GPUs', () => {
  const d = directives(unitText);
  const one = (key: string) => d.get(key)?.[0];
  assert.equal(one('Type'), 'notify');
  assert.match(one('WatchdogSec') ?? '', /^\d+/);
  assert.equal(one('Restart'), 'on-failure');
  assert.match(one('After') ?? '', /network-online\.target/);
  assert.match(one('After') ?? '', /time-sync\.target/);
  assert.equal(one('ProtectSystem'), 'strict');
  assert.ok(d.get('ReadWritePaths')?.includes('/var/lib/crad-edge'));
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('PrivateTmp'), 'yes');
  assert.equal(one('SupplementaryGroups'), 'video');
  const devices = d.get('DeviceAllow') ?? [];
  assert.ok(devices.some((v) => v.startsWith('char-video4linux')), 'V4L2 cameras');
  assert.ok(devices.some((v) => v.startsWith('/dev/nvidia0')), 'NVIDIA GPUs');
  assert.ok(devices.some((v) => v.startsWith('/dev/nvmap')), 'Jetson GPU');
  assert.equal(d.get('MemoryDenyWriteExecute'), undefined, 'V8 needs W+X memory');
});

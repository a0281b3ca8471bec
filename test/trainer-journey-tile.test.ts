// The quality engineer's path (test/helpers/trainer-journey.ts) on real images: Magnetic Tile's
// free images from ../shared/data, the mobilenet-v2 ImageNet weights from the same place. Where
// the shared data is absent the test is skipped and says why (CI has it).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { imagesIn, journey, sharedData } from './helpers/trainer-journey.js';

const magneticTile = path.join(sharedData, 'magnetic-tile');
const weights = path.join(sharedData, 'backbones/coral_mobilenet_v2/mobilenet_v2_1.0_224_quant.tflite');
const absent = [path.join(magneticTile, 'MT_Free/Imgs'), weights].find((p) => !fs.existsSync(p));
const skip = absent ? `shared data absent: no ${absent} (place ../shared/data or set CRAD_SHARED_DATA)` : false;

test('Magnetic Tile good images: train -> calibrate -> export (three forms) -> daemon -> crad-edge infer', { skip }, async (t) => {
  const jpgs = (kind: string) => imagesIn(path.join(magneticTile, kind, 'Imgs')).filter((f) => f.endsWith('.jpg'));
  // Every 30th free image (they come in runs of one tile), split without overlap.
  const free = jpgs('MT_Free').filter((_, i) => i % 30 === 0);
  assert.ok(free.length >= 30, `${free.length} free images`);
  await journey(t, {
    train: free.slice(0, 16),
    calibrate: free.slice(16, 26),
    good: free.slice(26, 30),
    defective: ['MT_Blowhole', 'MT_Break', 'MT_Crack', 'MT_Fray', 'MT_Uneven'].map((kind) => jpgs(kind)[0]!),
  }, ['--backbone', 'mobilenet-v2'], tempDir('journey-tile'));
});

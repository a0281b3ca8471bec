// The one list of image extensions: every listed kind really decodes with the daemon's OpenCV, and
// both readers of folders (the folder camera, `crad-edge infer`) take exactly those files.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import cv from '../src/cv.js';
import { FolderSource } from '../src/capture/folder.js';
import { listImages } from '../src/cli/infer.js';
import { IMAGE_EXTENSIONS } from '../src/shared/images.js';
import { memoryLogger } from './helpers/capture.js';
import { tempDir } from './helpers/cleanup.js';

/** One small grey image per listed extension (every other one named in upper case); grey so that
 * .pgm keeps the value, a flat value so that JPEG/WebP keep it within a step or two. */
function folderOfEveryKind(): { dir: string; values: number[] } {
  const dir = tempDir('kinds');
  const values: number[] = [];
  IMAGE_EXTENSIONS.forEach((ext, i) => {
    const value = 20 * (i + 1);
    const mat = new cv.Mat(12, 16, cv.CV_8UC3, [value, value, value]);
    const file = path.join(dir, `img-${String(i).padStart(2, '0')}${ext}`);
    cv.imwrite(file, ext === '.pgm' ? mat.cvtColor(cv.COLOR_BGR2GRAY) : mat);
    if (i % 2) fs.renameSync(file, file.slice(0, -ext.length) + ext.toUpperCase());
    values.push(value);
  });
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image');
  return { dir, values };
}

test('every listed image extension decodes with OpenCV and both folder readers take them all', async () => {
  const { dir, values } = folderOfEveryKind();
  assert.equal(listImages(dir).length, IMAGE_EXTENSIONS.length);
  const { log } = memoryLogger();
  const source = new FolderSource(dir, false, log);
  await source.open();
  const read: number[] = [];
  for (let mat = await source.read(); mat; mat = await source.read()) {
    assert.deepEqual([mat.rows, mat.cols, mat.channels], [12, 16, 3]);
    read.push((mat.at(6, 8) as unknown as { x: number }).x);
    mat.release();
  }
  source.close();
  assert.equal(source.skipped, 0);
  assert.equal(read.length, values.length);
  read.forEach((value, i) => assert.ok(Math.abs(value - values[i]!) <= 3, `${IMAGE_EXTENSIONS[i]}: ${value} vs ${values[i]}`));
});

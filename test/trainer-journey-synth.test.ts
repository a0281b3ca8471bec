// The quality engineer's path (test/helpers/trainer-journey.ts) without the shared data: the
// synthetic generator's washer, on the mobilenet-v2-nsfwjs backbone whose weights set-up fetches
// into .work/ (the demo model's), so the scores are a trained model's, well above 1.
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { crad, imagesIn, journey, repoRoot } from './helpers/trainer-journey.js';

const nsfwjs = path.join(repoRoot, '.work/nsfwjs/package');
const skip = fs.existsSync(nsfwjs) ? false : `no nsfwjs weights at ${nsfwjs} (scripts/fetch-nsfwjs-weights.sh, run by scripts/setup.sh)`;

test('synthetic washer images: train -> calibrate -> export (three forms) -> daemon -> crad-edge infer', { skip }, async (t) => {
  const work = tempDir('journey-synth');
  const data = path.join(work, 'synth');
  crad('synth', '--out', data, '--classes', 'washer', '--train', '26', '--test-good', '4', '--test-defect', '4', '--size', '160');
  const washer = (folder: string) => imagesIn(path.join(data, 'washer', folder));
  const good = washer('train/good');
  const kinds = fs.readdirSync(path.join(data, 'washer/test')).filter((kind) => kind !== 'good').sort();
  await journey(t, {
    train: good.slice(0, 16),
    calibrate: good.slice(16),
    good: washer('test/good'),
    defective: kinds.flatMap((kind) => washer(`test/${kind}`)),
  }, ['--backbone', 'mobilenet-v2-nsfwjs'], work);
});

// The one place OpenCV is loaded. @u4/opencv4nodejs's loader prints its build environment to
// stdout on every require, which would corrupt `crad-edge infer --json` output: silence it first.
import { createRequire } from 'node:module';
import type * as OpenCV from '@u4/opencv4nodejs';

const require = createRequire(import.meta.url);
(require('@u4/opencv-build') as { Log: { silence: boolean } }).Log.silence = true;
const cv = require('@u4/opencv4nodejs') as typeof OpenCV.default;

export default cv;
export type { Mat, Rect } from '@u4/opencv4nodejs';

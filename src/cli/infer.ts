// `crad-edge infer`: the model on still images, no broker. One line per image on stdout;
// images that do not decode are skipped, named on stderr and counted in the exit code.
import fs from 'node:fs';
import path from 'node:path';
import cv from '../cv.js';
import { loadConfig, type AppConfig } from '../config/load.js';
import type { Frame } from '../capture/frame.js';
import { loadModel, modelOptions } from '../inference/model.js';
import { postprocess, postprocessOptions } from '../inference/postprocess.js';
import type { InspectionResult, Result } from '../inference/types.js';
import { isImageFile } from '../shared/images.js';
import { createLogger } from '../shared/log.js';

export interface InferOptions {
  model?: string;
  config?: string;
  json?: boolean;
  out?: string;
}

export function listImages(target: string): string[] {
  const stat = fs.statSync(target);
  if (!stat.isDirectory()) return [target];
  return fs
    .readdirSync(target)
    .filter(isImageFile)
    .sort()
    .map((name) => path.join(target, name));
}

export async function inferCommand(target: string, opts: InferOptions): Promise<number> {
  let config: AppConfig;
  let files: string[];
  try {
    config = loadConfig(opts.config);
    if (opts.model) config.model.path = path.resolve(opts.model);
    if (opts.out) {
      config.overlay = { ...config.overlay, enabled: true, onlyNG: false };
      config.crops = { ...config.crops, enabled: true };
      fs.mkdirSync(opts.out, { recursive: true });
    }
    files = listImages(target);
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
  // Logs go to stderr so that stdout stays one line per image.
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, process.stderr);
  let model;
  try {
    model = await loadModel(config.model.path, modelOptions(config), log);
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
  const post = postprocessOptions(config);
  let skipped = 0;
  let sequence = 0;
  try {
    for (let i = 0; i < files.length; i += config.inference.maxBatch) {
      const frames: { frame: Frame; file: string }[] = [];
      for (const file of files.slice(i, i + config.inference.maxBatch)) {
        const frame = await readFrame(file, ++sequence);
        if (frame) frames.push({ frame, file });
        else {
          skipped++;
          console.error(`skipped ${file}: not a decodable image`);
        }
      }
      if (frames.length === 0) continue;
      const inference = await model.run(frames.map((f) => f.frame));
      inference.frames.forEach((frameInference, k) => {
        const file = frames[k]!.file;
        const result = postprocess(frameInference, inference.model, post, {
          queueMs: 0,
          preprocessMs: inference.timings.preprocessMs,
          inferenceMs: inference.timings.inferenceMs,
          batchSize: inference.timings.batchSize,
        });
        console.log(opts.json ? JSON.stringify(summary(file, result)) : line(file, result));
        if (opts.out) writeImages(opts.out, file, result);
      });
      for (const { frame } of frames) frame.release();
    }
  } finally {
    await model.release();
  }
  if (skipped > 0) console.error(`${skipped} of ${files.length} images skipped`);
  return skipped > 0 ? 2 : 0;
}

async function readFrame(file: string, sequence: number): Promise<Frame | null> {
  let image;
  try {
    image = await cv.imreadAsync(file, cv.IMREAD_COLOR);
  } catch {
    return null;
  }
  if (image.empty) return null;
  const now = Date.now();
  return {
    cameraId: 'infer',
    sequence,
    capturedAt: new Date(now).toISOString(),
    capturedMono: performance.now(),
    image,
    roi: null,
    release: () => image.release(),
  };
}

function summary(file: string, result: InspectionResult) {
  return {
    file,
    raw: result.raw,
    normalized: result.normalized,
    verdict: result.verdict,
    calibrated: result.calibrated,
    regions: result.regions,
    model: { name: result.model.name, hash: result.model.hash },
    inferenceMs: result.latency.inferenceMs,
  };
}

function line(file: string, result: InspectionResult): string {
  const verdict = result.verdict ?? 'uncalibrated';
  const normalized = result.normalized === null ? '-' : result.normalized.toFixed(3);
  return `${file}  ${verdict}  normalized=${normalized}  raw=${result.raw.toFixed(4)}  regions=${result.regions.length}`;
}

function writeImages(outDir: string, file: string, result: Result): void {
  const stem = path.basename(file, path.extname(file));
  if (result.overlay) fs.writeFileSync(path.join(outDir, `${stem}.overlay.jpg`), result.overlay);
  result.crops.forEach((crop, n) => fs.writeFileSync(path.join(outDir, `${stem}.crop${n}.jpg`), crop));
}

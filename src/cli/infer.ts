// `crad-edge infer`: the model on still images, no broker. One line per image on stdout;
// images that do not decode are skipped, named on stderr and counted in the exit code.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, type AppConfig } from '../config/load.js';
import { loadModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import { postprocessOptions } from '../inference/postprocess.js';
import { scoreFiles } from '../inference/score-files.js';
import type { InspectionResult } from '../inference/types.js';
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
  try {
    for await (const scored of scoreFiles(model, files, post, config.inference.maxBatch)) {
      if (!scored.result) {
        skipped++;
        console.error(`skipped ${scored.file}: not a decodable image`);
        continue;
      }
      console.log(opts.json ? JSON.stringify(summary(scored.file, scored.result)) : line(scored.file, scored.result));
      if (opts.out) writeImages(opts.out, scored.file, scored.result);
    }
  } finally {
    await model.release();
  }
  if (skipped > 0) console.error(`${skipped} of ${files.length} images skipped`);
  return skipped > 0 ? 2 : 0;
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

function writeImages(outDir: string, file: string, result: InspectionResult): void {
  const stem = path.basename(file, path.extname(file));
  if (result.overlay) fs.writeFileSync(path.join(outDir, `${stem}.overlay.jpg`), result.overlay);
  result.crops.forEach((crop, n) => fs.writeFileSync(path.join(outDir, `${stem}.crop${n}.jpg`), crop));
}

// Golden samples (challenge test): images with the verdict a model must give them. A model that
// misses one is not allowed to serve. A set is a folder: either ok/ and ng/ sub-folders of images,
// or a manifest.json {"images": [{"file", "expected": "OK" | "NG"}]} (the layout of samples/).
// Sets are found per model (model.goldenDir, else <model>.golden beside the file), and
// runGoldenSamples takes any folder, so a recipe can name a set of its own.
import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../config/load.js';
import { scoreFiles } from './score-files.js';
import { isImageFile } from '../shared/images.js';
import type { CradModel } from './model.js';
import type { PostprocessOptions } from './postprocess.js';
import type { Verdict } from './types.js';

export interface GoldenSample {
  file: string;
  expected: Verdict;
}

export interface GoldenFailure {
  file: string;
  expected: Verdict;
  /** The verdict the model gave; null when it gave none (uncalibrated model, undecodable image). */
  got: Verdict | null;
  normalized: number | null;
}

/** One run of a golden set against one model: recorded in the audit log and on the status topic. */
export interface GoldenRun {
  passed: boolean;
  dir: string;
  model: { path: string; hash: string };
  total: number;
  failed: GoldenFailure[];
  /** Why the run could not judge the model at all (an unreadable set); failed is then empty. */
  error?: string;
  at: string;
  durationMs: number;
}

/** Largest number of failures a run lists (status payloads and MQTT answers stay small). */
export const MAX_LISTED_FAILURES = 50;

/** The golden set for a model file: model.goldenDir when set, else <model>.golden when it exists. */
export function goldenDirFor(config: AppConfig, modelPath = config.model.path): string | null {
  if (config.model.goldenDir) return config.model.goldenDir;
  const beside = path.join(path.dirname(modelPath), `${path.basename(modelPath, '.onnx')}.golden`);
  return fs.existsSync(beside) ? beside : null;
}

/** The samples of a set; throws naming the problem when the folder is not a usable set. */
export function listGoldenSamples(dir: string): GoldenSample[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`golden samples folder ${dir} does not exist`);
  const manifest = path.join(dir, 'manifest.json');
  const samples = fs.existsSync(manifest) ? fromManifest(dir, manifest) : fromFolders(dir);
  if (samples.length === 0) throw new Error(`golden samples folder ${dir} holds no images (expected ok/ and ng/ sub-folders or a manifest.json)`);
  return samples;
}

function fromFolders(dir: string): GoldenSample[] {
  const samples: GoldenSample[] = [];
  for (const [folder, expected] of [['ok', 'OK'], ['ng', 'NG']] as const) {
    const sub = path.join(dir, folder);
    if (!fs.existsSync(sub)) continue;
    for (const name of fs.readdirSync(sub).filter(isImageFile).sort()) samples.push({ file: path.join(sub, name), expected });
  }
  return samples;
}

function fromManifest(dir: string, manifest: string): GoldenSample[] {
  let images: unknown;
  try {
    images = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { images?: unknown }).images;
  } catch (err) {
    throw new Error(`golden samples manifest ${manifest} is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(images)) throw new Error(`golden samples manifest ${manifest} must hold {"images": [...]}`);
  return images.map((entry: { file?: unknown; expected?: unknown }, i) => {
    if (typeof entry?.file !== 'string' || (entry.expected !== 'OK' && entry.expected !== 'NG')) {
      throw new Error(`golden samples manifest ${manifest}: images[${i}] must be {"file": "...", "expected": "OK" | "NG"}`);
    }
    const file = path.resolve(dir, entry.file);
    if (path.relative(dir, file).startsWith('..')) throw new Error(`golden samples manifest ${manifest}: images[${i}].file must lie inside ${dir}`);
    return { file, expected: entry.expected };
  });
}

/** Score every sample of `dir` with `model` and compare verdicts. Never throws: problems are a failed run. */
export async function runGoldenSamples(model: CradModel, dir: string, post: PostprocessOptions, maxBatch: number): Promise<GoldenRun> {
  const t0 = performance.now();
  const base = { dir, model: { path: model.info.path, hash: model.info.hash }, at: new Date().toISOString() };
  const finish = (fields: Pick<GoldenRun, 'total' | 'failed'> & { error?: string }): GoldenRun => ({
    passed: fields.error === undefined && fields.failed.length === 0,
    ...base,
    ...fields,
    failed: fields.failed.slice(0, MAX_LISTED_FAILURES),
    durationMs: Math.round(performance.now() - t0),
  });
  let samples: GoldenSample[];
  try {
    samples = listGoldenSamples(dir);
  } catch (err) {
    return finish({ total: 0, failed: [], error: (err as Error).message });
  }
  const expected = new Map(samples.map((s) => [s.file, s.expected]));
  const failed: GoldenFailure[] = [];
  try {
    for await (const { file, result } of scoreFiles(model, samples.map((s) => s.file), post, maxBatch)) {
      const want = expected.get(file)!;
      const got = result?.verdict ?? null;
      if (got !== want) failed.push({ file, expected: want, got, normalized: result?.normalized ?? null });
    }
  } catch (err) {
    return finish({ total: samples.length, failed, error: `the model failed on the golden samples: ${(err as Error).message}` });
  }
  return finish({ total: samples.length, failed });
}

/** One line on why a run failed, naming the images. */
export function goldenFailureText(run: GoldenRun): string {
  if (run.error) return `golden samples (${run.dir}): ${run.error}`;
  const names = run.failed.map((f) => `${path.basename(f.file)} (expected ${f.expected}, got ${f.got ?? 'no verdict'})`);
  return `golden samples failed (${run.failed.length} of ${run.total} in ${run.dir}): ${names.join(', ')}`;
}

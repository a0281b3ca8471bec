// `crad-edge validate`: the golden samples on a model, without a broker. Prints one line per image
// that failed and a summary; records the run in the audit log of the config's state directory.
import path from 'node:path';
import { loadLayered } from '../config/layers.js';
import { goldenDirFor, goldenFailureText, runGoldenSamples } from '../inference/golden.js';
import { loadModel } from '../inference/model.js';
import { modelOptions } from '../inference/model-options.js';
import { postprocessOptions } from '../inference/postprocess.js';
import { AuditLog } from '../service/audit.js';
import { createLogger } from '../shared/log.js';

export interface ValidateOptions {
  config?: string;
  model?: string;
  golden?: string;
  json?: boolean;
}

/** Exit code: 0 passed, 1 failed, 2 nothing to run (no set, no model). */
export async function validateCommand(opts: ValidateOptions): Promise<number> {
  let config;
  try {
    config = loadLayered(opts.config).config;
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  const modelPath = opts.model ? path.resolve(opts.model) : config.model.path;
  const dir = opts.golden ? path.resolve(opts.golden) : goldenDirFor(config, modelPath);
  if (!dir) {
    console.error(`no golden samples for ${modelPath}: set model.goldenDir, make ${modelPath.replace(/\.onnx$/, '')}.golden/, or pass --golden <dir>`);
    return 2;
  }
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, process.stderr);
  let model;
  try {
    model = await loadModel(modelPath, { ...modelOptions(config), warmupRuns: 0 }, log);
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  let run;
  try {
    run = await runGoldenSamples(model, dir, postprocessOptions(config), config.inference.maxBatch);
  } finally {
    await model.release();
  }
  try {
    AuditLog.forConfig(config).record({
      kind: 'golden', outcome: run.passed ? 'passed' : 'failed', actor: { kind: 'cli' }, revisionBefore: config.remoteConfig.revision, revisionAfter: config.remoteConfig.revision,
      details: { why: 'crad-edge validate', run },
    });
  } catch (err) {
    console.error(`warning: the run is not in the audit log (${(err as Error).message})`);
  }
  if (opts.json) console.log(JSON.stringify(run));
  else {
    for (const f of run.failed) console.log(`FAIL ${f.file}  expected ${f.expected}, got ${f.got ?? 'no verdict'}${f.normalized === null ? '' : `  normalized=${f.normalized.toFixed(3)}`}`);
    console.log(run.passed ? `passed: ${run.total} golden samples in ${dir} (${run.durationMs} ms)` : goldenFailureText(run));
  }
  return run.passed ? 0 : 1;
}

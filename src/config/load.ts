// Loading and validating configuration: defaults <- config file <- environment.
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { REDACTED, redactUrls } from '../shared/redact.js';
import {
  cameraLeaves, describeFormat, isLeaf, leafKinds, leaves, makeConfig, pairedKeyProblem, schema, setValueAt, validateCamera, valueAt,
  type AppConfig, type CameraConfig, type Leaf, type SchemaTree,
} from './schema.js';
import { recipeReferenceProblem, resolveRecipePaths } from './recipes.js';

export type { AppConfig } from './schema.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Load a config file (JSON) over the defaults and validate it strictly: unknown keys, wrong types
 * and out-of-range values are errors naming the key. Relative paths are resolved against the file.
 */
export function loadConfig(file?: string, overrides: Record<string, unknown> = {}): AppConfig {
  const config = makeConfig();
  const baseDir = file ? path.dirname(path.resolve(file)) : process.cwd();
  if (file) {
    const parsed = readConfigFile(file);
    checkShape(parsed, schema as unknown as SchemaTree, '');
    config.load(parsed);
  }
  if (Object.keys(overrides).length > 0) {
    checkShape(overrides, schema as unknown as SchemaTree, '');
    config.load(overrides);
  }
  return validateLoaded(config, baseDir);
}

/** A config file's JSON object (comments and trailing commas allowed), not yet validated. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  // JSON with comments, so example configs can explain themselves.
  const errors: ParseError[] = [];
  const parsed: unknown = parseJsonc(text, errors, { allowTrailingComma: true, disallowComments: false });
  if (errors.length > 0) {
    const first = errors[0]!;
    const line = text.slice(0, first.offset).split('\n').length;
    throw new ConfigError(`config file ${file} is not valid JSON: ${printParseErrorCode(first.error)} at line ${line}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${file} must hold a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

/** Validate a plain config object (already merged) the same way a file is validated. */
export function validateConfigObject(value: Record<string, unknown>, baseDir = process.cwd()): AppConfig {
  const config = makeConfig();
  checkShape(value, schema as unknown as SchemaTree, '');
  config.load(value);
  return validateLoaded(config, baseDir);
}

/**
 * Convict silently merges an object given where a list or a scalar belongs; catch that shape
 * mismatch before loading, naming the key.
 */
function checkShape(value: unknown, node: SchemaTree, at: string): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
  for (const [key, child] of Object.entries(value)) {
    if (!Object.hasOwn(node, key)) continue; // convict's strict validation names unknown keys
    const childSchema = node[key]!;
    const where = at ? `${at}.${key}` : key;
    if (!isLeaf(childSchema)) {
      checkShape(child, childSchema, where);
    } else if (typeof child === 'object' && child !== null && !Array.isArray(child) && !leafKinds(childSchema).includes('object')) {
      throw new ConfigError(`invalid configuration:\n${where}: must be ${describeFormat(childSchema)}, got an object`);
    }
  }
}

function validateLoaded(config: ReturnType<typeof makeConfig>, baseDir: string): AppConfig {
  try {
    config.validate({ allowed: 'strict' });
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n${(err as Error).message}`);
  }
  const props = config.getProperties() as AppConfig;
  const cameras = (props.cameras as unknown[]).map((c, i) => validateCamera(c, i));
  const resolved: AppConfig = { ...props, cameras };
  // Paths in a config file are relative to the file, wherever the daemon is started from.
  for (const [key, leaf] of leaves()) {
    if (leaf.filePath) setValueAt(resolved, key, resolveFrom(baseDir, valueAt(resolved, key) as string));
  }
  for (const cam of cameras) {
    if ((cam.source === 'folder' || cam.source === 'file') && cam.path) cam.path = resolveFrom(baseDir, cam.path);
  }
  resolved.recipes = resolveRecipePaths(props.recipes, baseDir);
  const problem = pairedKeyProblem(resolved) ?? recipeReferenceProblem(resolved);
  if (problem) throw new ConfigError(`invalid configuration:\n${problem}`);
  return resolved;
}

/** The file a config key names, read now; failing that, a ConfigError that names the key. */
export function readKeyFile(key: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${file || '(empty path)'}: ${(err as Error).message}`);
  }
}

function resolveFrom(baseDir: string, p: string): string {
  return p && !path.isAbsolute(p) ? path.resolve(baseDir, p) : p;
}

/** A config string as it may be shown: URLs lose their credentials, other secrets go whole. */
function shown(value: unknown, leaf: Leaf): unknown {
  if (typeof value !== 'string' || value === '') return value;
  return leaf.sensitive && !value.includes('://') ? REDACTED : redactUrls(value);
}

/** A copy of the config with secrets (schema leaves marked sensitive, URL credentials) hidden, for printing and config/get. */
/** The ids of the cameras that run (enabled), in config order. */
export function enabledCameraIds(config: AppConfig): string[] {
  return config.cameras.filter((c) => c.enabled).map((c) => c.id);
}

export function redact(config: AppConfig): AppConfig {
  const copy = structuredClone(config);
  for (const [key, leaf] of leaves()) {
    const segments = key.split('.');
    const group = valueAt(copy, segments.slice(0, -1).join('.')) as Record<string, unknown> | undefined;
    const name = segments[segments.length - 1]!;
    if (segments.length > 1 && group) group[name] = shown(group[name], leaf);
  }
  copy.cameras = copy.cameras.map((camera) => {
    const out: Record<string, unknown> = { ...camera };
    for (const [field, leaf] of cameraLeaves()) out[field] = shown(camera[field], leaf);
    return out as CameraConfig;
  });
  return copy;
}

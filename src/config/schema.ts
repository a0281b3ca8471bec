// The one source of truth for configuration: every value the daemon reads is declared here, with its
// type, range, default and doc string, and with its policy: how a change to it applies (`apply`) and
// whether a remote push may change it (`remote`). Everything else derives from these declarations:
// the TypeScript types, live updates, `restartRequired` in push answers, the signed-push rule and
// the README's configuration reference (`npm run docs:config`).
import os from 'node:os';
import convict from 'convict';

/**
 * The policy of a key, one table each: how a changed value takes effect in a running daemon
 * (`apply`), and whether a remote push may change it (`remote`, always also subject to
 * remoteConfig.allow). `reads` is how the configuration reference shows it; `restart` marks the
 * parts a change leaves waiting for a daemon restart (reported in restartRequired).
 */
export const APPLY = {
  live: { reads: 'live', means: 'the stage that reads it applies it at once' },
  reopen: { reads: 'camera reopens', means: 'the camera reopens its source (camera fields only)' },
  camera: { reads: 'camera rebuilt', means: 'the camera is rebuilt (camera fields only)' },
  model: { reads: 'model reloaded', means: 'the model is loaded again (beside the running one, swapped between batches)' },
  mqtt: { reads: 'restart (broker)', means: 'needs a new broker connection, applied at the next daemon start', restart: true },
  outbox: { reads: 'restart (outbox)', means: 'needs the outbox reopened, applied at the next daemon start', restart: true },
  daemon: { reads: 'restart', means: 'applied at the next daemon start', restart: true },
} as const satisfies Record<string, { reads: string; means: string; restart?: true }>;
export type Apply = keyof typeof APPLY;
/** Parts a change can leave waiting for a daemon restart (reported in restartRequired). */
export const RESTART_PARTS: readonly Apply[] = (Object.keys(APPLY) as Apply[]).filter((apply) => 'restart' in APPLY[apply]);

export const REMOTE = {
  allowed: { means: 'a push may change it (when in remoteConfig.allow)' },
  // The value decides what the daemon reads or runs (a GStreamer pipeline can write files).
  signed: { means: 'only a signed push, on a device with remoteConfig.publicKey; clearing it back to the default needs no signature' },
  never: { means: 'only the operator\'s file changes it (it guards remote configuration itself)' },
} as const;
export type Remote = keyof typeof REMOTE;

export type JsonKind = 'string' | 'number' | 'boolean' | 'null' | 'array' | 'object';

export interface Leaf<T = unknown> {
  doc: string;
  format: unknown;
  default: T;
  apply: Apply;
  /** Whether a remote push may change it: required, so that no key becomes pushable by being forgotten. */
  remote: Remote;
  env?: string;
  sensitive?: boolean;
  /** The default as the reference shows it, where the real one depends on the machine. */
  docDefault?: string;
  /** A file or directory: a relative value in a config file resolves against the file's folder. */
  filePath?: true;
  /** A recipe (a named product setting the PLC selects, see `recipes`) may override this key. */
  recipe?: boolean;
}

/** The value type a schema node declares: a leaf's default type, a group's object of them. */
export type ValueOf<S> = S extends Leaf<infer T> ? T : { -readonly [K in keyof S]: ValueOf<S[K]> };

// ---- formats ---------------------------------------------------------------------------------

/** What each named format accepts, for docs, error messages and the exact-kind check of pushes. */
interface FormatInfo {
  kinds: JsonKind[];
  describe: string;
}
const formatInfo = new Map<string, FormatInfo>([
  ['String', { kinds: ['string'], describe: 'string' }],
  ['Boolean', { kinds: ['boolean'], describe: 'boolean' }],
]);

function defineFormat(name: string, info: FormatInfo, validate: (value: unknown) => void, coerce?: (value: unknown) => unknown): string {
  if (!formatInfo.has(name)) {
    convict.addFormat({ name, validate, ...(coerce ? { coerce } : {}) });
    formatInfo.set(name, info);
  }
  return name;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Environment variables arrive as strings: numbers are parsed, anything else fails validation. */
const toNumber = (value: unknown): unknown => (typeof value === 'string' && value.trim() !== '' ? Number(value) : value);

function rangeText(min: number, max: number): string {
  return max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}..${max}`;
}

/** A finite number in [min, max]. (JSON's 1e309 parses as Infinity; -0 is read as 0.) */
function numberIn(min: number, max: number): string {
  return defineFormat(`number ${rangeText(min, max)}`, { kinds: ['number'], describe: `number ${rangeText(min, max)}` }, (value) => {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error('must be a finite number');
    if (value < min || value > max) throw new Error(`must be between ${min} and ${max}, got ${value}`);
  }, toNumber);
}

/** An integer in [min, max]. */
function integerIn(min: number, max = Number.MAX_SAFE_INTEGER): string {
  return defineFormat(`integer ${rangeText(min, max)}`, { kinds: ['number'], describe: `integer ${rangeText(min, max)}` }, (value) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new Error('must be an integer');
    if (value < 0 && min === 0) throw new Error(`must be a positive integer or 0, got ${value}`);
    if (value < min || value > max) throw new Error(max === Number.MAX_SAFE_INTEGER ? `must be >= ${min}, got ${value}` : `must be between ${min} and ${max}, got ${value}`);
  }, toNumber);
}

/** A UTF-16 surrogate without its partner: JSON can carry one ("\ud800"), UTF-8 cannot. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether `text` holds a surrogate without its partner (it has no UTF-8 form). */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** Longest topic level, in UTF-8 bytes (MQTT allows 65535 for a whole topic; brokers and PLCs less). */
export const MAX_TOPIC_LEVEL_BYTES = 64;
/** Longest topic prefix, in UTF-8 bytes. */
export const MAX_TOPIC_PREFIX_BYTES = 256;

/**
 * Why `level` cannot be one MQTT topic level, or null when it can. Beyond MQTT's own rules (no
 * wildcards, no separator, no U+0000, well-formed UTF-8) brokers disconnect a client whose topic
 * holds control characters or non-characters (MQTT 5 section 1.5.4 says SHOULD NOT): mosquitto
 * does, so a camera id with one would cut the device off.
 */
export function topicLevelProblem(level: unknown): string | null {
  if (typeof level !== 'string' || level.length === 0) return 'must be a non-empty string';
  if (LONE_SURROGATE.test(level)) return 'must be well-formed Unicode (no lone surrogates)';
  if (/[/+#]/.test(level)) return "must not contain '/', '+' or '#'";
  if (/[\u0000-\u001f\u007f-\u009f]/.test(level)) return 'must not contain control characters';
  if (/\s/.test(level)) return 'must not contain spaces';
  for (const char of level) {
    const cp = char.codePointAt(0)!;
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return `must not contain the non-character U+${cp.toString(16).toUpperCase()}`;
  }
  const bytes = Buffer.byteLength(level, 'utf8');
  if (bytes > MAX_TOPIC_LEVEL_BYTES) return `must be at most ${MAX_TOPIC_LEVEL_BYTES} bytes in UTF-8, got ${bytes}`;
  return null;
}

const TOPIC_LEVEL = defineFormat('topic-level', { kinds: ['string'], describe: 'topic level' }, (value) => {
  const problem = topicLevelProblem(value);
  if (problem) throw new Error(`must be a single MQTT topic level: ${problem}`);
});

/** A topic level, or '' for "not set" (its doc says what '' means). */
const OPTIONAL_TOPIC_LEVEL = defineFormat('optional-topic-level', { kinds: ['string'], describe: "topic level or ''" }, (value) => {
  const problem = value === '' ? null : topicLevelProblem(value);
  if (problem) throw new Error(`must be '' or a single MQTT topic level: ${problem}`);
});

const TOPIC_PREFIX = defineFormat('topic-prefix', { kinds: ['string'], describe: 'topic prefix' }, (value) => {
  if (typeof value !== 'string' || value.length === 0) throw new Error('must be a non-empty string');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_TOPIC_PREFIX_BYTES) throw new Error(`must be at most ${MAX_TOPIC_PREFIX_BYTES} bytes in UTF-8, got ${bytes}`);
  for (const level of value.split('/')) {
    const problem = topicLevelProblem(level);
    if (problem) throw new Error(`level ${JSON.stringify(level)} is not a valid MQTT topic level: ${problem}`);
  }
});

/** An MQTT UTF-8 string (client id, user name, password): well-formed, no U+0000, at most 65535 bytes. */
const MQTT_STRING = defineFormat('mqtt-string', { kinds: ['string'], describe: 'string' }, (value) => {
  if (typeof value !== 'string') throw new Error('must be a string');
  if (value.includes('\u0000')) throw new Error('must not contain U+0000 (MQTT forbids it)');
  if (hasLoneSurrogate(value)) throw new Error('must be well-formed Unicode (no lone surrogates)');
  if (Buffer.byteLength(value, 'utf8') > 65535) throw new Error('must be at most 65535 bytes in UTF-8');
});

const QOS = defineFormat('qos', { kinds: ['number'], describe: '0 \\| 1 \\| 2' }, (value) => {
  if (value !== 0 && value !== 1 && value !== 2) throw new Error('must be 0, 1 or 2');
}, toNumber);

const STRING_LIST = defineFormat('string-list', { kinds: ['array'], describe: 'list of strings' }, (value) => {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new Error('must be a list of strings');
}, (value) => (typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value));

/** sparkplug.brokers: MQTT URLs without credentials (those go in sparkplug.username/password, which are redacted). */
const SPARKPLUG_BROKERS = defineFormat('broker-list', { kinds: ['array'], describe: 'list of mqtt(s):// URLs' }, (value) => {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new Error('must be a list of URLs');
  for (const url of value as string[]) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`${JSON.stringify(url)} is not a URL`);
    }
    if (!/^(mqtt|mqtts|tcp|ssl|ws|wss):$/.test(parsed.protocol)) throw new Error(`${JSON.stringify(url)}: scheme must be mqtt, mqtts, tcp, ssl, ws or wss`);
    if (parsed.username || parsed.password) throw new Error('no credentials in the URLs: set sparkplug.username and sparkplug.password');
  }
}, (value) => (typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value));

/** Largest frame side any camera delivers, and so the bound of ROI coordinates. */
export const MAX_FRAME_SIDE = 65535;

export type Roi = { x: number; y: number; width: number; height: number };

const ROI = defineFormat('roi', { kinds: ['object', 'null'], describe: 'null \\| {x, y, width, height}' }, (value) => {
  if (value === null) return;
  if (!isPlainObject(value)) throw new Error('must be null or {x, y, width, height}');
  const keys = Object.keys(value).sort().join(',');
  if (keys !== 'height,width,x,y') throw new Error(`must have exactly the keys x, y, width, height (got ${keys || 'none'})`);
  for (const [key, min] of [['x', 0], ['y', 0], ['width', 1], ['height', 1]] as const) {
    const v = value[key];
    if (!Number.isInteger(v) || (v as number) < min) throw new Error(`${key} must be an integer >= ${min}`);
    if ((v as number) > MAX_FRAME_SIDE) throw new Error(`${key} must be at most ${MAX_FRAME_SIDE}`);
  }
  if ((value.x as number) + (value.width as number) > MAX_FRAME_SIDE || (value.y as number) + (value.height as number) > MAX_FRAME_SIDE) {
    throw new Error(`must lie inside a ${MAX_FRAME_SIDE}x${MAX_FRAME_SIDE} frame`);
  }
});

/** Verdicts a result can have: NG, OK, or none (an uncalibrated model). */
export const ARCHIVE_VERDICTS = ['NG', 'OK', 'uncalibrated'] as const;

const VERDICT_LIST = defineFormat('verdict-list', { kinds: ['array'], describe: `list of ${ARCHIVE_VERDICTS.join(' \\| ')}` }, (value) => {
  if (!Array.isArray(value) || value.some((v) => !(ARCHIVE_VERDICTS as readonly unknown[]).includes(v))) {
    throw new Error(`must be a list of ${ARCHIVE_VERDICTS.join(', ')}`);
  }
}, (value) => (typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value));

const NULLABLE_NUMBER = defineFormat('nullable-number', { kinds: ['number', 'null'], describe: 'null \\| number' }, (value) => {
  if (value !== null && (typeof value !== 'number' || !Number.isFinite(value))) throw new Error('must be null or a finite number');
}, (value: unknown) => (value === 'null' || value === '' ? null : toNumber(value)));

/** The JSON kinds a leaf's format accepts (a push is held to them exactly: convict coerces on load). */
export function leafKinds(leaf: Leaf): JsonKind[] {
  const format = leaf.format;
  if (Array.isArray(format)) return [...new Set(format.map((v) => jsonKind(v)))];
  const name = typeof format === 'function' ? format.name : String(format);
  return formatInfo.get(name)?.kinds ?? [jsonKind(leaf.default)];
}

/** A leaf's format in words, for docs and error messages. */
export function describeFormat(leaf: Leaf): string {
  const format = leaf.format;
  if (Array.isArray(format)) return format.map((f) => JSON.stringify(f)).join(' \\| ');
  const name = typeof format === 'function' ? format.name : String(format);
  return formatInfo.get(name)?.describe ?? name;
}

export function jsonKind(value: unknown): JsonKind {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value as JsonKind;
}

// ---- leaves ----------------------------------------------------------------------------------

function setting<T>(leaf: Leaf<T>): Leaf<T> {
  return leaf;
}

/** A leaf whose value is one of `values` (typed as their union). */
function oneOf<const V extends readonly (string | number)[]>(values: V, leaf: Omit<Leaf<V[number]>, 'format'>): Leaf<V[number]> {
  return { ...leaf, format: [...values] };
}

// ---- cameras ---------------------------------------------------------------------------------

/** Schema of one camera entry; `cameras` is a list of these, each validated on its own. */
export const cameraSchema = {
  id: setting({
    doc: 'Camera id: one MQTT topic level, unique on this device. Results go to <prefix>/<id>/result.',
    format: TOPIC_LEVEL,
    default: 'cam1',
    apply: 'camera', remote: 'allowed',
  }),
  enabled: setting({ doc: 'Capture from this camera.', format: Boolean, default: true, apply: 'camera', remote: 'allowed' }),
  source: oneOf(['folder', 'file', 'usb', 'gige', 'rtsp', 'http', 'gstreamer'] as const, {
    doc: 'Source kind: folder (images), file (video), usb (V4L2), gige (GigE Vision/USB3 Vision via aravissrc), rtsp, http, or gstreamer (a raw pipeline ending in appsink).',
    default: 'folder',
    apply: 'reopen', remote: 'allowed',
  }),
  path: setting({
    doc: 'folder: directory of images; file: video file path. A remote push must give an absolute path.',
    format: String,
    default: '',
    apply: 'reopen',
    remote: 'signed',
  }),
  loop: setting({
    doc: 'folder/file: start again at the end (true), or stop the camera after the last frame (false).',
    format: Boolean,
    default: true,
    apply: 'reopen', remote: 'allowed',
  }),
  device: setting({ doc: 'usb: V4L2 device index ("0") or path ("/dev/video0").', format: String, default: '0', apply: 'reopen', remote: 'allowed' }),
  url: setting({
    doc: 'rtsp/http: stream URL (credentials in it are redacted in logs and config print).',
    format: String,
    default: '',
    apply: 'reopen', remote: 'allowed',
    sensitive: true,
  }),
  address: setting({
    doc: 'gige: camera IP address, serial number or name as aravis knows it (an IP is the most reliable).',
    format: String,
    default: '',
    apply: 'reopen', remote: 'allowed',
  }),
  pixelFormat: setting({
    doc: 'gige: GenICam pixel format to request, e.g. Mono8, BayerRG8, RGB8Packed; empty keeps the camera default.',
    format: String,
    default: '',
    apply: 'reopen', remote: 'allowed',
  }),
  pipeline: setting({
    doc: 'gstreamer: full pipeline that ends in "appsink" and delivers BGR frames, e.g. "videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink".',
    format: String,
    default: '',
    apply: 'reopen',
    remote: 'signed',
  }),
  width: setting({ doc: 'usb/gige: requested frame width in pixels (0 = camera default).', format: integerIn(0, MAX_FRAME_SIDE), default: 0, apply: 'reopen', remote: 'allowed' }),
  height: setting({ doc: 'usb/gige: requested frame height in pixels (0 = camera default).', format: integerIn(0, MAX_FRAME_SIDE), default: 0, apply: 'reopen', remote: 'allowed' }),
  fourcc: setting({ doc: 'usb: requested FOURCC, e.g. MJPG or YUYV (empty = driver default).', format: String, default: '', apply: 'reopen', remote: 'allowed' }),
  fps: setting({
    doc: 'Target frames per second taken from this camera (0 = as fast as the source delivers). Frames above the rate are skipped at the source.',
    format: numberIn(0, 1000),
    default: 0,
    apply: 'live', remote: 'allowed',
  }),
  roi: setting({
    doc: 'Region of interest in full-frame pixels {x, y, width, height}, or null for the whole frame. Inference sees the ROI; region boxes are reported in full-frame coordinates. A push is checked against the camera\'s real frame size once it is known.',
    format: ROI,
    default: null as Roi | null,
    apply: 'live', remote: 'allowed',
    recipe: true,
  }),
  trigger: oneOf(['free', 'mqtt'] as const, {
    doc: 'free: capture continuously. mqtt: capture the next frame when a message arrives on <prefix>/<id>/trigger; its payload (JSON {"id": "..."} or plain text) becomes the result\'s triggerId.',
    default: 'free',
    // The pipeline queues a camera's frames by its trigger mode, so a new mode rebuilds the camera.
    apply: 'camera', remote: 'allowed',
  }),
  recipe: setting({
    doc: 'The recipe (a name in `recipes`) this camera inspects under at start, until the PLC selects another on <prefix>/recipe/set or in a trigger; empty = the base configuration. A selection is kept across restarts in service.stateDir while its recipe exists.',
    format: OPTIONAL_TOPIC_LEVEL,
    default: '',
    apply: 'live', remote: 'allowed',
  }),
  triggerDeadlineMs: setting({
    doc: 'trigger mqtt: a trigger not answered with a result within this long is answered with triggerFailVerdict and the reason (as is a trigger refused at once: camera not online, queue full, model failing).',
    format: integerIn(10, 600_000),
    default: 5000,
    apply: 'live', remote: 'allowed',
  }),
  triggerFailVerdict: oneOf(['ERROR', 'NG'] as const, {
    doc: 'trigger mqtt: the verdict of the result that answers a trigger which could not be inspected (its reason field says why).',
    default: 'ERROR',
    apply: 'live', remote: 'allowed',
  }),
  stallTimeoutMs: setting({
    doc: 'In free-run, a camera that delivers no frame for this long is declared stalled and reopened (trigger mode waits on triggers, never stalls).',
    format: integerIn(100, 3_600_000),
    default: 5000,
    apply: 'live', remote: 'allowed',
  }),
  reconnectMinMs: setting({ doc: 'First reopen delay after a capture failure; doubles per failure.', format: integerIn(10, 3_600_000), default: 500, apply: 'live', remote: 'allowed' }),
  reconnectMaxMs: setting({ doc: 'Largest reopen delay after repeated capture failures.', format: integerIn(10, 3_600_000), default: 30000, apply: 'live', remote: 'allowed' }),
};

export type CameraConfig = ValueOf<typeof cameraSchema>;
export type CameraSource = CameraConfig['source'];

/** Which field each source kind cannot do without. */
const REQUIRED_FIELD: Partial<Record<CameraSource, keyof CameraConfig>> = {
  folder: 'path', file: 'path', rtsp: 'url', http: 'url', gige: 'address', gstreamer: 'pipeline',
};

/** Validate one camera entry against cameraSchema; throws with the key path on bad input. */
export function validateCamera(entry: unknown, index: number): CameraConfig {
  if (!isPlainObject(entry)) throw new Error(`cameras[${index}]: must be an object`);
  for (const key of Object.keys(entry)) {
    if (!Object.hasOwn(cameraSchema, key)) {
      throw new Error(`cameras[${index}].${key}: unknown camera field (known: ${Object.keys(cameraSchema).join(', ')})`);
    }
  }
  const camera = convict(cameraSchema as unknown as convict.Schema<CameraConfig>);
  try {
    camera.load(entry);
    camera.validate({ allowed: 'strict' });
  } catch (err) {
    throw new Error((err as Error).message.replace(/^/gm, `cameras[${index}].`));
  }
  const props = camera.getProperties() as CameraConfig;
  const need = REQUIRED_FIELD[props.source];
  if (need && !props[need]) throw new Error(`cameras[${index}].${need}: required for source "${props.source}"`);
  if (props.reconnectMinMs > props.reconnectMaxMs) {
    throw new Error(`cameras[${index}].reconnectMinMs: must not exceed reconnectMaxMs (${props.reconnectMaxMs})`);
  }
  return props;
}

const CAMERA_LIST = defineFormat('camera-list', { kinds: ['array'], describe: 'list of cameras' }, (value) => {
  if (!Array.isArray(value)) throw new Error('must be a list of camera objects');
  const ids = new Set<string>();
  value.forEach((entry, i) => {
    const camera = validateCamera(entry, i);
    if (ids.has(camera.id)) throw new Error(`cameras[${i}].id: duplicate camera id "${camera.id}"`);
    ids.add(camera.id);
  });
});

// ---- recipes -------------------------------------------------------------------------------

/** Most recipes in one config (each may hold a model in memory; see model.maxRecipeModels). */
export const MAX_RECIPES = 64;

/** A recipe as written: a partial config of recipe keys, plus camera fields per camera id. */
export type RecipeOverrides = { [key: string]: unknown; number?: number; cameras?: Record<string, Partial<CameraConfig>> };

/** A value held to one leaf's format exactly as the leaf itself validates it (kinds, then convict). */
export function validateLeafValue(leaf: Leaf, value: unknown): void {
  if (!leafKinds(leaf).includes(jsonKind(value))) throw new Error(`must be ${describeFormat(leaf)}, got ${jsonKind(value)}`);
  const one = convict({ value: { format: leaf.format, default: leaf.default } } as unknown as convict.Schema<{ value: unknown }>);
  one.load({ value });
  try {
    one.validate({ allowed: 'strict' });
  } catch (err) {
    throw new Error((err as Error).message.replace(/^value: /, '').replace(/: value was [\s\S]*$/, ''));
  }
}

/** The overrides below `node` checked against `tree`: only leaves marked recipe, each by its format. */
function checkOverrides(node: unknown, tree: SchemaTree, where: string): void {
  if (!isPlainObject(node)) throw new Error(`${where}: must be an object`);
  for (const [key, value] of Object.entries(node)) {
    const at = `${where}.${key}`;
    const child = Object.hasOwn(tree, key) ? tree[key] : undefined;
    if (child === undefined) throw new Error(`${at}: not a configuration key`);
    if (!isLeaf(child)) {
      checkOverrides(value, child, at);
      continue;
    }
    if (!child.recipe) throw new Error(`${at}: a recipe may not override this key (see the keys marked "recipe")`);
    try {
      validateLeafValue(child, value);
    } catch (err) {
      throw new Error(`${at}: ${(err as Error).message}`);
    }
  }
}

function validateRecipe(name: string, recipe: unknown): void {
  const problem = topicLevelProblem(name);
  if (problem) throw new Error(`recipes: name ${JSON.stringify(name)} must be one MQTT topic level: ${problem}`);
  if (!isPlainObject(recipe)) throw new Error(`recipes.${name}: must be an object of overrides`);
  const { cameras, number, ...global } = recipe;
  if (number !== undefined && !(Number.isInteger(number) && (number as number) >= 0 && (number as number) <= 65535)) {
    throw new Error(`recipes.${name}.number: must be an integer 0..65535 (the number a PLC selects the recipe by), got ${JSON.stringify(number)}`);
  }
  checkOverrides(global, schema as unknown as SchemaTree, `recipes.${name}`);
  if (cameras === undefined) return;
  if (!isPlainObject(cameras)) throw new Error(`recipes.${name}.cameras: must be an object of camera id -> camera fields`);
  for (const [id, fields] of Object.entries(cameras)) checkOverrides(fields, cameraSchema as unknown as SchemaTree, `recipes.${name}.cameras.${id}`);
}

// Named 'object': convict loads a leaf of that format name whole instead of merging into it by key.
const RECIPE_MAP = defineFormat('object', { kinds: ['object'], describe: 'object of recipes' }, (value) => {
  if (!isPlainObject(value)) throw new Error('must be an object of named recipes');
  const names = Object.keys(value);
  if (names.length > MAX_RECIPES) throw new Error(`at most ${MAX_RECIPES} recipes, got ${names.length}`);
  for (const name of names) validateRecipe(name, value[name]);
  const byNumber = new Map<unknown, string>();
  for (const name of names) {
    const number = (value[name] as RecipeOverrides).number;
    if (number === undefined) continue;
    if (byNumber.has(number)) throw new Error(`recipes.${name}.number: ${number} is already recipe ${byNumber.get(number)}'s`);
    byNumber.set(number, name);
  }
});

// ---- the daemon ------------------------------------------------------------------------------

/** Where systemd's StateDirectory puts the daemon's state; the defaults of every state path start here. */
const STATE_DIR = '/var/lib/crad-edge';
const hostname = os.hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, MAX_TOPIC_LEVEL_BYTES);
const MS_PER_HOUR = 3_600_000;

export const schema = {
  device: {
    id: setting({
      doc: 'Device id: the last level of the topic prefix and the name in every payload. Default: the host name.',
      format: TOPIC_LEVEL,
      default: hostname || 'crad-edge',
      docDefault: '(host name)',
      env: 'CRAD_DEVICE_ID',
      apply: 'daemon', remote: 'allowed',
    }),
  },
  log: {
    level: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, {
      doc: 'Log level (pino).',
      default: 'info',
      env: 'CRAD_LOG_LEVEL',
      apply: 'daemon', remote: 'allowed',
    }),
  },
  cameras: setting({
    doc: 'Cameras to capture from: a list of camera objects (see "Camera fields"). How a change applies is decided per camera field.',
    format: CAMERA_LIST,
    default: [] as CameraConfig[],
    apply: 'camera', remote: 'allowed',
  }),
  recipes: setting({
    doc: 'Named recipes (product settings) the PLC selects per camera: {"<name>": {<overrides>}}. A recipe overrides the keys marked "Recipe" in this reference, as a partial config ({"model": {"path": ...}, "inference": {"sensitivity": 0.1}}), and camera fields per camera ({"cameras": {"<id>": {"roi": ...}}}). Every recipe model is loaded at start; see README "Recipes".',
    format: RECIPE_MAP,
    default: {} as Record<string, RecipeOverrides>,
    apply: 'model',
    // A recipe names a model file, and unlike model.path its path is not held to model.modelsDir.
    remote: 'signed',
  }),
  model: {
    path: setting({
      filePath: true,
      doc: 'The CRAD ONNX model file (see the model contract). Relative paths are resolved against the config file. A pushed path must name a file inside model.modelsDir.',
      format: String,
      default: 'models/demo/crad-demo.onnx',
      env: 'CRAD_MODEL',
      apply: 'model', remote: 'allowed',
      recipe: true,
    }),
    modelsDir: setting({
      filePath: true,
      doc: 'Directory that remote model pushes may load from; a pushed path must resolve inside it.',
      format: String,
      default: `${STATE_DIR}/models`,
      apply: 'live',
      remote: 'never',
    }),
    goldenDir: setting({
      filePath: true,
      doc: 'Golden samples (challenge test): a folder with ok/ and ng/ sub-folders of images, or a manifest.json {"images": [{"file", "expected": "OK" | "NG"}]}. A model must give every image its expected verdict at start-up (else cameras stay stopped), before a pushed, delivered or replaced model serves (else it is refused), and on demand. Empty: the folder <model file without .onnx>.golden beside the model, when there is one; else no golden samples.',
      format: String,
      default: '',
      apply: 'live',
      // It decides which files the daemon reads and what may serve.
      remote: 'signed',
      recipe: true,
    }),
    delivery: {
      enabled: setting({ doc: 'Accept model deliveries on <prefix>/model/deliver (also needs remoteConfig.enabled and "model.path" in remoteConfig.allow).', format: Boolean, default: true, apply: 'live', remote: 'never' }),
      maxBytes: setting({ doc: 'Largest model file a delivery may announce and download.', format: integerIn(1024), default: 2 * 1024 * 1024 * 1024, apply: 'live', remote: 'never' }),
      connectTimeoutMs: setting({ doc: 'A delivery fails when the model server does not answer (TCP, TLS and response headers) within this long.', format: integerIn(10, 600_000), default: 15000, apply: 'live', remote: 'never' }),
      idleTimeoutMs: setting({ doc: 'A delivery fails when the download receives no byte for this long (the partial file is kept for a resumed download).', format: integerIn(10, 600_000), default: 30000, apply: 'live', remote: 'never' }),
      ca: setting({ filePath: true, doc: 'CA certificate file (PEM) trusted for https model servers besides the system CAs; empty = system CAs only.', format: String, default: '', apply: 'live', remote: 'never' }),
      totalTimeoutMs: setting({ doc: 'Longest time one download may take in all.', format: integerIn(100, 24 * 3_600_000), default: 3_600_000, apply: 'live', remote: 'never' }),
    },
    executionProviders: setting({
      doc: 'onnxruntime execution providers in order of preference (tensorrt, cuda, cpu). Providers the installed runtime lacks are skipped with a log line; cpu is always the last resort.',
      format: STRING_LIST,
      default: ['cpu'] as string[],
      apply: 'model', remote: 'allowed',
    }),
    intraOpThreads: setting({ doc: 'onnxruntime intra-op threads (0 = one per core).', format: integerIn(0, 1024), default: 0, apply: 'model', remote: 'allowed' }),
    interOpThreads: setting({ doc: 'onnxruntime inter-op threads (0 = runtime default).', format: integerIn(0, 1024), default: 0, apply: 'model', remote: 'allowed' }),
    graphOptimization: oneOf(['disabled', 'basic', 'extended', 'all'] as const, {
      doc: 'onnxruntime graph optimisation level.',
      default: 'all',
      apply: 'model', remote: 'allowed',
    }),
    memoryArena: setting({ doc: 'Enable onnxruntime\'s CPU memory arena.', format: Boolean, default: true, apply: 'model', remote: 'allowed' }),
    intraOpSpinning: setting({
      doc: 'Let onnxruntime\'s idle intra-op threads spin-wait for the next run instead of sleeping. Off, the daemon\'s own work between runs gets the cores (less CPU, more of the time in the model); on, large batches run a little faster (bench/README.md: 4 cameras at saturation on 2 cores, +3 %).',
      format: Boolean,
      default: false,
      apply: 'model', remote: 'allowed',
    }),
    maxRecipeModels: setting({
      doc: 'Most distinct model files loaded at once for recipes (besides model.path); each costs a session\'s memory. Recipes beyond it are refused (reported in the device status).',
      format: integerIn(0, 64),
      default: 4,
      apply: 'model', remote: 'allowed',
    }),
    warmupRuns: setting({ doc: 'Inference runs on a blank batch at load, before the model serves frames.', format: integerIn(0, 100), default: 1, apply: 'model', remote: 'allowed' }),
    inferenceThread: oneOf(['auto', 'main', 'worker'] as const, {
      doc: 'Where session.run runs: main (the event loop waits for each inference), worker (a worker thread: the main thread keeps capturing, preprocessing and publishing meanwhile), or auto: worker on machines with 4 or more cores, main below (on 2 cores the freed main thread competes with the inference threads and throughput drops).',
      default: 'auto',
      apply: 'model', remote: 'allowed',
    }),
    sessions: setting({
      doc: 'onnxruntime sessions that run batches side by side, each on its own worker thread (with more than 1, model.inferenceThread does not apply), the next batch preprocessed while the others run; model.intraOpThreads 0 then shares the cores out between them. More sessions raise throughput on CPU (bench/README.md, 2 cores: 2 sessions of 1 thread, +13 to +30 % frames/s with 1-4 cameras at saturation or a live camera faster than the model), at the cost of each frame\'s latency when frames do not queue (it runs on fewer threads), more CPU, and one copy of the model\'s memory per session. 1 gives the shortest answer to a lone frame (a triggered camera).',
      format: integerIn(1, 16),
      default: 1,
      apply: 'model', remote: 'allowed',
    }),
    prepareAhead: setting({
      doc: 'With the model on worker threads (model.inferenceThread worker, or model.sessions above 1): take and preprocess one more batch than there are sessions while they run, queued on a session\'s thread, so that the model starts it the moment a run ends instead of waiting for the daemon to post-process, publish and preprocess (model busy near 100 %). At saturation a frame then also waits for the run before it (about one inference time more latency); a frame that finds the model idle does not. On 2 cores it pays only with model.daemonNice (bench/README.md, both on, 1-4 cameras at saturation: +12 to +20 % frames/s, model busy 98-99 %, about 2.3 x the latency per frame).',
      format: Boolean,
      default: false,
      apply: 'model', remote: 'allowed',
    }),
    daemonNice: setting({
      doc: 'With the model on worker threads: nice levels by which the daemon\'s own threads (event loop, libuv\'s pool: capture, preprocessing, outbox, MQTT) run below the inference threads (Linux, per thread; 0 = all alike). Where the intra-op threads fill the cores, the daemon\'s work then takes a core when the model leaves one, instead of stalling a run by preempting one of its threads; the daemon still gets the cores whenever the model waits for it. Meant with model.prepareAhead. A lowered thread cannot be raised again without privileges, hence a restart.',
      format: integerIn(0, 19),
      default: 0,
      apply: 'daemon', remote: 'allowed',
    }),
    tensorrt: {
      fp16: setting({
        doc: 'TensorRT: allow FP16 kernels. onnxruntime-node 1.30 passes only the device id to TensorRT, so this and the two keys below take effect only with a binding that forwards them (a warning says so); see README "GPUs".',
        format: Boolean,
        default: true,
        apply: 'model', remote: 'allowed',
      }),
      engineCacheDir: setting({
        filePath: true,
        doc: 'TensorRT: directory for built engines (building takes minutes; keep it on persistent storage). Empty disables the cache.',
        format: String,
        default: `${STATE_DIR}/trt-cache`,
        apply: 'model',
        remote: 'signed',
      }),
      workspaceBytes: setting({ doc: 'TensorRT: max workspace size in bytes.', format: integerIn(1 << 20), default: 1073741824, apply: 'model', remote: 'allowed' }),
    },
    cuda: {
      deviceId: setting({ doc: 'CUDA/TensorRT device index.', format: integerIn(0, 64), default: 0, apply: 'model', remote: 'allowed' }),
    },
  },
  inference: {
    maxBatch: setting({
      doc: 'Largest batch of frames (across cameras) sent to the model in one run.',
      format: integerIn(1, 256),
      default: 4,
      apply: 'live', remote: 'allowed',
    }),
    maxWaitMs: setting({
      doc: 'Longest time a frame waits for others to fill a batch before the batch runs anyway.',
      format: integerIn(0, 10_000),
      default: 5,
      apply: 'live', remote: 'allowed',
    }),
    imageThreshold: setting({
      doc: 'Override the model\'s calibrated image threshold (raw score units); null uses the model\'s.',
      format: NULLABLE_NUMBER,
      default: null as number | null,
      apply: 'live', remote: 'allowed',
      recipe: true,
    }),
    pixelThreshold: setting({
      doc: 'Override the model\'s calibrated pixel threshold (raw map units) for defect regions; null uses the model\'s.',
      format: NULLABLE_NUMBER,
      default: null as number | null,
      apply: 'live', remote: 'allowed',
      recipe: true,
    }),
    sensitivity: setting({
      doc: 'Verdict offset: NG when normalized >= 0.5 + sensitivity. Negative = stricter (more NG), positive = more lenient.',
      format: numberIn(-0.5, 0.5),
      default: 0,
      apply: 'live', remote: 'allowed',
      recipe: true,
    }),
  },
  regions: {
    enabled: setting({ doc: 'Report defect regions (connected components of the thresholded map).', format: Boolean, default: true, apply: 'live', remote: 'allowed', recipe: true }),
    minArea: setting({ doc: 'Smallest region kept, in pixels of the full-resolution frame.', format: integerIn(0, MAX_FRAME_SIDE * MAX_FRAME_SIDE), default: 64, apply: 'live', remote: 'allowed', recipe: true }),
    topK: setting({ doc: 'Most regions reported per frame (largest peak score first).', format: integerIn(0, 1000), default: 5, apply: 'live', remote: 'allowed', recipe: true }),
  },
  crops: {
    enabled: setting({ doc: 'Publish a JPEG crop of each reported region from the full-resolution frame.', format: Boolean, default: true, apply: 'live', remote: 'allowed', recipe: true }),
    onlyNG: setting({ doc: 'Publish crops only for NG verdicts.', format: Boolean, default: true, apply: 'live', remote: 'allowed', recipe: true }),
    margin: setting({ doc: 'Margin around each region box, in frame pixels.', format: integerIn(0, MAX_FRAME_SIDE), default: 16, apply: 'live', remote: 'allowed', recipe: true }),
    maxSize: setting({ doc: 'Longest side of a crop in pixels (larger crops are scaled down; 0 = no limit).', format: integerIn(0, MAX_FRAME_SIDE), default: 512, apply: 'live', remote: 'allowed', recipe: true }),
    quality: setting({ doc: 'JPEG quality of crops.', format: integerIn(1, 100), default: 85, apply: 'live', remote: 'allowed', recipe: true }),
  },
  overlay: {
    enabled: setting({ doc: 'Publish a heatmap overlay JPEG of the inspected image.', format: Boolean, default: false, apply: 'live', remote: 'allowed', recipe: true }),
    onlyNG: setting({ doc: 'Publish overlays only for NG verdicts.', format: Boolean, default: true, apply: 'live', remote: 'allowed', recipe: true }),
    alpha: setting({ doc: 'Heatmap opacity over the image.', format: numberIn(0, 1), default: 0.5, apply: 'live', remote: 'allowed', recipe: true }),
    maxSize: setting({ doc: 'Longest side of the overlay in pixels (0 = full size).', format: integerIn(0, MAX_FRAME_SIDE), default: 640, apply: 'live', remote: 'allowed', recipe: true }),
    quality: setting({ doc: 'JPEG quality of overlays.', format: integerIn(1, 100), default: 80, apply: 'live', remote: 'allowed', recipe: true }),
  },
  mqtt: {
    url: setting({
      doc: 'Broker URL: mqtt://host:1883 or mqtts://host:8883 (TLS).',
      format: String,
      default: 'mqtt://127.0.0.1:1883',
      env: 'CRAD_MQTT_URL',
      apply: 'mqtt', remote: 'allowed',
      sensitive: true,
    }),
    protocolVersion: oneOf([4, 5] as const, {
      doc: 'MQTT protocol: 5 (binary crops with content-type/correlation properties) or 4 (3.1.1; binaries as base64 JSON).',
      default: 5,
      apply: 'mqtt', remote: 'allowed',
    }),
    clientId: setting({ doc: 'MQTT client id (empty = crad-edge-<device id>).', format: MQTT_STRING, default: '', apply: 'mqtt', remote: 'allowed' }),
    username: setting({ doc: 'MQTT username (empty = none).', format: MQTT_STRING, default: '', env: 'CRAD_MQTT_USERNAME', apply: 'mqtt', remote: 'allowed' }),
    password: setting({ doc: 'MQTT password.', format: MQTT_STRING, default: '', sensitive: true, env: 'CRAD_MQTT_PASSWORD', apply: 'mqtt', remote: 'allowed' }),
    keepaliveSec: setting({ doc: 'MQTT keepalive in seconds (0 = off).', format: integerIn(0, 65535), default: 30, apply: 'mqtt', remote: 'allowed' }),
    connectTimeoutMs: setting({ doc: 'Give up one broker connection attempt (TCP + TLS + CONNACK) after this long, then back off and retry.', format: integerIn(100, 600_000), default: 10000, apply: 'mqtt', remote: 'allowed' }),
    sessionExpirySec: setting({
      doc: 'How long the broker keeps the daemon\'s session (its subscriptions, and triggers and commands sent while it reconnects) after the connection drops, in seconds; 0 = a clean session each time (triggers sent while the daemon reconnects are lost). MQTT 5 sets it as the session expiry; MQTT 3.1.1 asks for a persistent session (clean false) and the broker\'s own expiry applies. It bounds what waits for the daemon across a restart of the daemon too. A trigger whose sentAt is older than its deadline is answered with code 22. Keep it short: a long outage should not deliver a backlog of stale commands; a broker that must keep sessions across its own restart needs persistence on (mosquitto: persistence true).',
      format: integerIn(0, 86_400),
      default: 60,
      apply: 'mqtt', remote: 'allowed',
    }),
    topicPrefix: setting({
      doc: 'ISA-95 style topic prefix without the device level, e.g. acme/plant1/line3. Topics are <topicPrefix>/<device.id>/...',
      format: TOPIC_PREFIX,
      default: 'crad',
      apply: 'mqtt', remote: 'allowed',
    }),
    tls: {
      ca: setting({ filePath: true, doc: 'TLS: CA certificate file (PEM) to trust for the broker.', format: String, default: '', apply: 'mqtt', remote: 'signed' }),
      cert: setting({ filePath: true, doc: 'TLS: client certificate file (PEM); with mqtt.tls.key (both or neither).', format: String, default: '', apply: 'mqtt', remote: 'signed' }),
      key: setting({ filePath: true, doc: 'TLS: client private key file (PEM), for mqtt.tls.cert.', format: String, default: '', sensitive: true, apply: 'mqtt', remote: 'signed' }),
      rejectUnauthorized: setting({ doc: 'TLS: reject brokers whose certificate does not verify.', format: Boolean, default: true, apply: 'mqtt', remote: 'signed' }),
    },
    reconnectMinMs: setting({ doc: 'First broker reconnect delay; doubles per failed attempt, with full jitter.', format: integerIn(10, 3_600_000), default: 1000, apply: 'mqtt', remote: 'allowed' }),
    reconnectMaxMs: setting({ doc: 'Largest broker reconnect delay.', format: integerIn(10, 3_600_000), default: 60000, apply: 'mqtt', remote: 'allowed' }),
    qos: {
      result: setting({ doc: 'QoS of result messages.', format: QOS, default: 1 as 0 | 1 | 2, apply: 'live', remote: 'allowed' }),
      image: setting({ doc: 'QoS of crop and overlay messages.', format: QOS, default: 0 as 0 | 1 | 2, apply: 'live', remote: 'allowed' }),
      status: setting({ doc: 'QoS of status messages.', format: QOS, default: 1 as 0 | 1 | 2, apply: 'live', remote: 'allowed' }),
    },
    retain: {
      result: setting({ doc: 'Retain the latest result per camera.', format: Boolean, default: false, apply: 'live', remote: 'allowed' }),
      image: setting({ doc: 'Retain the latest crop/overlay.', format: Boolean, default: false, apply: 'live', remote: 'allowed' }),
    },
  },
  outbox: {
    path: setting({
      filePath: true,
      doc: 'SQLite file of the store-and-forward outbox (results wait here until the broker acknowledges them).',
      format: String,
      default: `${STATE_DIR}/outbox.sqlite`,
      env: 'CRAD_OUTBOX',
      apply: 'outbox', remote: 'allowed',
    }),
    maxBytes: setting({ doc: 'Largest outbox size in bytes; oldest messages are dropped (and counted) beyond it.', format: integerIn(1024), default: 512 * 1024 * 1024, apply: 'live', remote: 'allowed' }),
    maxAgeHours: setting({ doc: 'Messages older than this are dropped (and counted).', format: numberIn(0.01, 24 * 365), default: 72, apply: 'outbox', remote: 'allowed' }),
    includeImages: setting({ doc: 'Keep crops and overlays in the outbox too (otherwise they are sent only while connected).', format: Boolean, default: false, apply: 'live', remote: 'allowed' }),
    sendBeforeRunMs: setting({
      doc: 'With the model on the main thread (model.sessions 1, model.inferenceThread main), how long a batch may wait before its session.run for the fsync of the results already made, so that they are sent before the run holds the main thread rather than after it (ms, 0 = do not wait). The fsync runs beside the batch\'s preprocessing, so the wait is usually none; when the disk is slow it trades a few ms of the model\'s time for one whole inference time off those results\' latency (bench/README.md).',
      format: integerIn(0, 1000),
      default: 10,
      apply: 'live', remote: 'allowed',
    }),
    inflight: setting({
      doc: 'Most outbox messages sent and not yet acknowledged at a time (paces a replay after an outage); the broker\'s MQTT 5 Receive Maximum lowers it further.',
      format: integerIn(1, 65535),
      default: 20,
      apply: 'live', remote: 'allowed',
    }),
  },
  sparkplug: {
    enabled: setting({ doc: 'Publish a Sparkplug B 3.0 edge node beside the JSON topics (its own MQTT connection: to sparkplug.brokers, or else to mqtt.url with the same credentials and TLS).', format: Boolean, default: false, apply: 'mqtt', remote: 'allowed' }),
    groupId: setting({ doc: 'Sparkplug group id: spBv1.0/<groupId>/...', format: TOPIC_LEVEL, default: 'crad', apply: 'mqtt', remote: 'allowed' }),
    edgeNodeId: setting({ doc: "Sparkplug edge node id ('' = device.id). Each camera is a Sparkplug device under it.", format: OPTIONAL_TOPIC_LEVEL, default: '', apply: 'mqtt', remote: 'allowed' }),
    primaryHostId: setting({ doc: "Primary host application id: births wait for spBv1.0/STATE/<id> online, and the node dies and reconnects when it goes offline ('' = none).", format: OPTIONAL_TOPIC_LEVEL, default: '', apply: 'mqtt', remote: 'allowed' }),
    metrics: setting({
      doc: 'Optional metrics to publish, by name as in the README\'s Sparkplug table (empty = all). bdSeq and the control metrics are always published.',
      format: STRING_LIST,
      default: [] as string[],
      apply: 'mqtt', remote: 'allowed',
    }),
    historyMaxRows: setting({ doc: 'Most results kept for historical DDATA while the Sparkplug session is down; the oldest are dropped (and counted) beyond it.', format: integerIn(1), default: 1_000_000, apply: 'mqtt', remote: 'allowed' }),
    replayMessagesPerSec: setting({ doc: 'Pace of the historical DDATA replay after a birth, messages (25 results each) per second; rows are deleted only once the broker confirmed them.', format: integerIn(1, 100_000), default: 200, apply: 'mqtt', remote: 'allowed' }),
    brokers: setting({
      doc: "The Sparkplug plane's own MQTT servers, in the order the node walks them (to the next on a primary host going offline or a server failing twice), e.g. an Ignition MQTT Distributor. Empty = mqtt.url with mqtt.username/password/tls. No credentials in the URLs: sparkplug.username/password.",
      format: SPARKPLUG_BROKERS,
      default: [] as string[],
      apply: 'mqtt', remote: 'allowed',
    }),
    username: setting({ doc: 'Username on the sparkplug.brokers (empty = none; unused while sparkplug.brokers is empty).', format: MQTT_STRING, default: '', apply: 'mqtt', remote: 'allowed' }),
    password: setting({ doc: 'Password on the sparkplug.brokers.', format: MQTT_STRING, default: '', sensitive: true, apply: 'mqtt', remote: 'allowed' }),
    tls: {
      ca: setting({ filePath: true, doc: 'TLS on the sparkplug.brokers: CA certificate file (PEM).', format: String, default: '', apply: 'mqtt', remote: 'signed' }),
      cert: setting({ filePath: true, doc: 'TLS on the sparkplug.brokers: client certificate file (PEM); with sparkplug.tls.key.', format: String, default: '', apply: 'mqtt', remote: 'signed' }),
      key: setting({ filePath: true, doc: 'TLS on the sparkplug.brokers: client private key file (PEM).', format: String, default: '', sensitive: true, apply: 'mqtt', remote: 'signed' }),
      rejectUnauthorized: setting({ doc: 'TLS on the sparkplug.brokers: reject servers whose certificate does not verify.', format: Boolean, default: true, apply: 'mqtt', remote: 'signed' }),
    },
    legacyState: setting({ doc: "Also accept a Sparkplug 2.2 primary host's STATE/<primaryHostId> \"ONLINE\"/\"OFFLINE\" (no timestamp: arrival order). Off: such a host is reported as an error and the node waits.", format: Boolean, default: false, apply: 'mqtt', remote: 'allowed' }),
  },
  remoteConfig: {
    enabled: setting({ doc: 'Accept configuration pushes on <prefix>/config/set.', format: Boolean, default: true, apply: 'live', remote: 'never' }),
    allow: setting({
      doc: 'Keys (or key prefixes ending in ".") that a remote push may change. Keys whose policy is "never" cannot be changed remotely whatever this says.',
      format: STRING_LIST,
      default: ['inference.', 'regions.', 'crops.', 'overlay.', 'cameras', 'model.path', 'mqtt.qos.', 'mqtt.retain.'] as string[],
      apply: 'live',
      remote: 'never',
    }),
    publicKey: setting({
      doc: 'Ed25519 public key (PEM or base64 SPKI DER) that signs pushes; when set, unsigned or badly signed pushes are rejected.',
      format: String,
      default: '',
      apply: 'live',
      remote: 'never',
    }),
    probationMs: setting({
      doc: 'A push that rebuilds a camera, reloads the model or waits for a restart runs on probation this long: unless the broker connection is up and every changed free-run camera has delivered a result (a triggered one is online) by then, the daemon rolls back to the last good revision by itself. 0 = no probation.',
      format: integerIn(0, MS_PER_HOUR),
      default: 60000,
      apply: 'live',
      remote: 'never',
    }),
    maxPayloadBytes: setting({ doc: 'Largest accepted config push.', format: integerIn(1024, 16 * 1024 * 1024), default: 65536, apply: 'live', remote: 'never' }),
    revision: setting({
      doc: 'Revision of this configuration: 0 for a hand-written file, raised by one by every applied remote push, which must name it as its baseRevision. Written by the daemon when it persists a pushed config; a push can never set it.',
      format: integerIn(0),
      default: 0,
      apply: 'live',
      remote: 'never',
    }),
  },
  archive: {
    enabled: setting({ doc: 'Keep the full frame, overlay and result JSON of chosen results on disk (the console lists them).', format: Boolean, default: false, apply: 'daemon', remote: 'allowed' }),
    dir: setting({ filePath: true, doc: 'Archive folder (empty = <service.stateDir>/archive).', format: String, default: '', apply: 'daemon', remote: 'signed' }),
    verdicts: setting({ doc: 'Which results are archived, by verdict.', format: VERDICT_LIST, default: ['NG'] as Array<(typeof ARCHIVE_VERDICTS)[number]>, apply: 'live', remote: 'allowed' }),
    maxCount: setting({ doc: 'Most archived results; the oldest are deleted (and counted) beyond it.', format: integerIn(1, 10_000_000), default: 1000, apply: 'live', remote: 'allowed' }),
    maxBytes: setting({ doc: 'Largest archive size in bytes; the oldest results are deleted beyond it.', format: integerIn(1 << 20), default: 2 * 1024 * 1024 * 1024, apply: 'live', remote: 'allowed' }),
    maxAgeHours: setting({ doc: 'Archived results older than this are deleted (0 = no age limit).', format: numberIn(0, 24 * 365 * 10), default: 720, apply: 'live', remote: 'allowed' }),
    minFreeBytes: setting({
      doc: 'Free space the archive leaves on its filesystem: below it the oldest results are deleted, and a new one is not written while none is left to delete.',
      format: integerIn(0),
      default: 1024 * 1024 * 1024,
      apply: 'live', remote: 'allowed',
    }),
    queue: setting({ doc: 'Results waiting to be written; a result arriving while it is full is not archived (counted), so the pipeline never waits for the disk.', format: integerIn(1, 1000), default: 8, apply: 'daemon', remote: 'allowed' }),
    quality: setting({ doc: 'JPEG quality of the archived full frame.', format: integerIn(1, 100), default: 90, apply: 'live', remote: 'allowed' }),
  },
  dataset: {
    dir: setting({
      filePath: true,
      doc: 'Dataset folder for retraining, in the trainer\'s MVTec layout: <dir>/<camera id>/train/good/*.png (empty = <service.stateDir>/dataset).',
      format: String,
      default: '',
      apply: 'daemon',
      remote: 'signed',
    }),
    recordEvery: setting({ doc: 'Record mode: save every Nth frame of the cameras in dataset.recordCameras as a good image (0 = off; the console starts and stops recording too).', format: integerIn(0, 1_000_000), default: 0, apply: 'live', remote: 'allowed' }),
    recordCameras: setting({ doc: 'Cameras that record mode saves (empty = all).', format: STRING_LIST, default: [] as string[], apply: 'live', remote: 'allowed' }),
  },
  training: {
    python: setting({ filePath: true, doc: 'On-device training (train/start, the console\'s Teach page): the Python that runs the trainer (`crad teach`); Debian\'s, with its torch (on a Jetson, the one with CUDA torch).', format: String, default: '/usr/bin/python3', apply: 'live', remote: 'never' }),
    trainerDir: setting({ filePath: true, doc: 'The folder holding the trainer\'s crad package (its PYTHONPATH); empty = the training/ folder of this installation.', format: String, default: '', apply: 'live', remote: 'never' }),
    nice: setting({ doc: 'Nice level of the trainer process, added to the daemon\'s: inspection keeps the CPU first.', format: integerIn(0, 19), default: 10, apply: 'live', remote: 'allowed' }),
    threads: setting({ doc: 'Cores the trainer may use (torch and OpenMP threads; pinned to the last cores with taskset where it is installed). Leave the rest to inspection.', format: integerIn(1, 256), default: 1, apply: 'live', remote: 'allowed' }),
    minFreeMb: setting({ doc: 'A run refuses to start with less free disk than this under service.stateDir (features, checkpoints and the model file).', format: integerIn(0), default: 500, apply: 'live', remote: 'allowed' }),
    backbone: setting({ doc: 'The trainer\'s backbone (crad train --backbone); empty = the trainer\'s default (efficientnet-b4, the paper\'s, whose weight file must be installed; on a CPU use mobilenet-v2: docs/quality-engineers.md, Backbones).', format: String, default: '', apply: 'live', remote: 'signed' }),
    backboneWeights: setting({ filePath: true, doc: 'Weight file of training.backbone; empty = its documented location.', format: String, default: '', apply: 'live', remote: 'signed' }),
    randomBackbone: setting({ doc: 'Random backbone weights: for tests of the flow only, never a model worth serving.', format: Boolean, default: false, apply: 'live', remote: 'never' }),
    inputSize: setting({ doc: 'Model input size in pixels; 0 = the trainer\'s default.', format: integerIn(0, 4096), default: 0, apply: 'live', remote: 'allowed' }),
    epochs: setting({ doc: 'Training epochs; 0 = the trainer\'s default for the set\'s size.', format: integerIn(0, 10_000), default: 0, apply: 'live', remote: 'allowed' }),
    minSteps: setting({ doc: 'crad train --min-steps (a small set trains at least this many optimizer steps); -1 = the trainer\'s default.', format: integerIn(-1, 1_000_000), default: -1, apply: 'live', remote: 'allowed' }),
    calibrationRule: oneOf(['', 'balanced', 'frr'] as const, { doc: 'crad calibrate --rule for the candidate\'s threshold: empty = the trainer\'s default with good images only (balanced: estimated false rejects against synthetic anomalies passed); frr = the false-reject bound alone.', default: '', apply: 'live', remote: 'allowed' }),
    selectSteps: setting({ doc: 'crad train --select-steps: optimizer steps of each candidate setting\'s short run when the trainer chooses its settings from synthetic anomalies (0 = the trainer\'s default; the choice runs before the first epoch).', format: integerIn(0, 1_000_000), default: 0, apply: 'live', remote: 'allowed' }),
    batchSize: setting({ doc: 'Training batch size; 0 = the trainer\'s default.', format: integerIn(0, 1024), default: 0, apply: 'live', remote: 'allowed' }),
    shadowShare: setting({ doc: 'Shadow check: the share of the camera\'s frames the candidate model also scores (beside the serving model, never in its way: a frame the candidate is still busy for is skipped).', format: numberIn(0, 1), default: 0.25, apply: 'live', remote: 'allowed' }),
    shadowFrames: setting({ doc: 'Shadow check: frames the candidate scores before the run is ready to promote (0 = no shadow: ready after the golden samples).', format: integerIn(0, 1_000_000), default: 200, apply: 'live', remote: 'allowed' }),
    autoPromote: setting({ doc: 'Promote a candidate by itself once it passed its golden samples and the shadow check, instead of waiting for a person (train/promote, the console).', format: Boolean, default: false, apply: 'live', remote: 'signed' }),
  },
  http: {
    enabled: setting({ doc: 'Run the operator console (live view, /metrics, /healthz, /readyz) inside the daemon.', format: Boolean, default: false, env: 'CRAD_HTTP_ENABLED', apply: 'daemon', remote: 'never' }),
    host: setting({
      doc: 'Address the console listens on. Anything but 127.0.0.1, ::1 or localhost counts as beyond loopback (even 127.0.0.2): then http.token or http.username/http.password is mandatory and the daemon refuses to start without one.',
      format: String,
      default: '127.0.0.1',
      env: 'CRAD_HTTP_HOST',
      apply: 'daemon',
      remote: 'never',
    }),
    port: setting({ doc: 'Console TCP port (0 = any free port, logged at start).', format: integerIn(0, 65535), default: 8080, env: 'CRAD_HTTP_PORT', apply: 'daemon', remote: 'never' }),
    token: setting({ doc: 'Bearer token that grants full access (Authorization: Bearer <token>). Empty = none.', format: String, default: '', sensitive: true, env: 'CRAD_HTTP_TOKEN', apply: 'daemon', remote: 'never' }),
    username: setting({ doc: 'Basic-auth user that grants full access (with http.password). Empty = none.', format: String, default: '', env: 'CRAD_HTTP_USERNAME', apply: 'daemon', remote: 'never' }),
    password: setting({ doc: 'Basic-auth password of http.username.', format: String, default: '', sensitive: true, env: 'CRAD_HTTP_PASSWORD', apply: 'daemon', remote: 'never' }),
    openReadOnly: setting({
      doc: 'Serve read-only pages, the live view and /metrics without credentials. Changes (config, counter resets) always need them when credentials are set.',
      format: Boolean,
      default: false,
      apply: 'daemon',
      remote: 'never',
    }),
    tls: {
      cert: setting({ filePath: true, doc: 'TLS: server certificate file (PEM); with http.tls.key (both or neither) the console speaks HTTPS only. A file that cannot be read or used stops the start, naming the key.', format: String, default: '', apply: 'daemon', remote: 'never' }),
      key: setting({ filePath: true, doc: 'TLS: server private key file (PEM), for http.tls.cert.', format: String, default: '', sensitive: true, apply: 'daemon', remote: 'never' }),
    },
    maxConnections: setting({ doc: 'Most open console connections; more are refused.', format: integerIn(1, 10_000), default: 64, apply: 'daemon', remote: 'never' }),
    requestTimeoutMs: setting({ doc: 'A client that has not sent its whole request in this long is dropped; idle keep-alive connections close after it too.', format: integerIn(1000, 600_000), default: 10000, apply: 'daemon', remote: 'never' }),
    liveFps: setting({ doc: 'Most live-view frames per second per camera (encoded only while someone watches; each viewer gets the latest).', format: numberIn(0.5, 5), default: 4, apply: 'daemon', remote: 'never' }),
    maxViewers: setting({ doc: 'Most live-view streams open at a time per camera.', format: integerIn(1, 100), default: 8, apply: 'daemon', remote: 'never' }),
    alarmNgStreak: setting({ doc: 'The console page raises an alarm (banner, optional sound) after this many NG parts in a row on a camera (0 = never); a camera that is not online raises it too.', format: integerIn(0, 100_000), default: 5, apply: 'live', remote: 'allowed' }),
  },
  audit: {
    maxBytes: setting({ doc: 'The audit log (<service.stateDir>/audit/audit.jsonl) is rotated when it would grow past this size.', format: integerIn(4096), default: 8 * 1024 * 1024, apply: 'live', remote: 'never' }),
    keepFiles: setting({ doc: 'Rotated audit files kept (audit.jsonl.1 is the newest); older ones are deleted.', format: integerIn(1, 100), default: 4, apply: 'live', remote: 'never' }),
  },
  service: {
    stateDir: setting({
      filePath: true,
      doc: 'Writable state directory (persisted config, TensorRT cache). systemd sets it via StateDirectory.',
      format: String,
      default: STATE_DIR,
      env: 'STATE_DIRECTORY',
      apply: 'daemon', remote: 'allowed',
    }),
    shutdownTimeoutMs: setting({ doc: 'Longest graceful shutdown before the daemon exits anyway.', format: integerIn(100, 600_000), default: 10000, apply: 'live', remote: 'allowed' }),
    statusIntervalMs: setting({ doc: 'How often the status topic and systemd STATUS are refreshed.', format: integerIn(1000, MS_PER_HOUR), default: 10000, apply: 'daemon', remote: 'allowed' }),
    watchdogStallMs: setting({
      doc: 'In free-run, systemd watchdog pings stop when no frame has been processed for this long (so a hung pipeline is restarted); in any mode, frames that wait this long with no batch taken or finished mean the batch loop is stalled (not ready, see service.faultExitDelayMs).',
      format: integerIn(1000, MS_PER_HOUR),
      default: 30000,
      apply: 'live', remote: 'allowed',
    }),
    faultExitDelayMs: setting({
      doc: 'When inspection stops outside a shutdown (the batch loop ended or stalled), the daemon says so at once (statuses not ready, /readyz 503, no watchdog pings) and exits with code 1 this long after, so that systemd restarts it.',
      format: integerIn(0, 600_000),
      default: 5000,
      apply: 'live', remote: 'allowed',
    }),
  },
};

/** The validated, effective configuration the daemon runs with. */
export type AppConfig = ValueOf<typeof schema>;

export function makeConfig() {
  return convict(schema as unknown as convict.Schema<AppConfig>);
}

/** Keys that work only together: both set or both empty (convict checks one key at a time). */
const PAIRED_KEYS: ReadonlyArray<readonly [string, string]> = [
  ['http.tls.cert', 'http.tls.key'],
  ['mqtt.tls.cert', 'mqtt.tls.key'],
];

/** Why a pair of keys that work only together is half set (naming the missing key), or null. */
export function pairedKeyProblem(config: AppConfig): string | null {
  for (const pair of PAIRED_KEYS) {
    const set = pair.filter((key) => valueAt(config, key) !== '');
    if (set.length === 1) return `${pair.find((key) => key !== set[0])}: must be set together with ${set[0]} (both or neither)`;
  }
  return null;
}

// ---- walking the schema ----------------------------------------------------------------------

export type SchemaTree = { [key: string]: SchemaTree | Leaf };

export function isLeaf(node: unknown): node is Leaf {
  return isPlainObject(node) && Object.hasOwn(node, 'default');
}

/** Every leaf below `node` with its dotted key, in declaration order. */
export function leaves(node: SchemaTree = schema as unknown as SchemaTree, prefix = ''): Array<[key: string, leaf: Leaf]> {
  const out: Array<[string, Leaf]> = [];
  for (const [name, child] of Object.entries(node)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (isLeaf(child)) out.push([key, child]);
    else out.push(...leaves(child, key));
  }
  return out;
}

/** The camera fields, as leaves. */
export const cameraLeaves = (): Array<[key: keyof CameraConfig, leaf: Leaf]> => leaves(cameraSchema as unknown as SchemaTree) as Array<[keyof CameraConfig, Leaf]>;

/**
 * What a dotted key names in `tree`: a leaf, a group, or nothing (with the longest prefix that is
 * a single setting, when the key goes on below one).
 */
export function lookup(key: string, tree: SchemaTree = schema as unknown as SchemaTree):
  | { kind: 'leaf'; leaf: Leaf }
  | { kind: 'group'; group: SchemaTree }
  | { kind: 'none'; leafPrefix: string | null } {
  let node: SchemaTree | Leaf = tree;
  const segments = key.split('.');
  for (let i = 0; i < segments.length; i++) {
    if (isLeaf(node)) return { kind: 'none', leafPrefix: segments.slice(0, i).join('.') };
    const segment = segments[i]!;
    if (!Object.hasOwn(node, segment)) return { kind: 'none', leafPrefix: null };
    node = node[segment]!;
  }
  return isLeaf(node) ? { kind: 'leaf', leaf: node } : { kind: 'group', group: node };
}

/** Set the value at a dotted key of a config object whose groups exist. */
export function setValueAt(target: object, key: string, value: unknown): void {
  const segments = key.split('.');
  const group = segments.length > 1 ? valueAt(target, segments.slice(0, -1).join('.')) : target;
  if (!isPlainObject(group)) throw new Error(`config has no group for ${key}`);
  group[segments[segments.length - 1]!] = value;
}

/** The value at a dotted key of a config object (undefined when absent). */
export function valueAt(source: unknown, key: string): unknown {
  let node = source;
  for (const segment of key.split('.')) {
    if (!isPlainObject(node) || !Object.hasOwn(node, segment)) return undefined;
    node = node[segment];
  }
  return node;
}

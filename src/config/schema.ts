// The one source of truth for configuration: every value the daemon reads is declared here,
// with its type, default and doc string. The README's configuration reference is generated from it
// (`npm run docs:config`).
import os from 'node:os';
import convict from 'convict';

const hostname = os.hostname().replace(/[^A-Za-z0-9_-]/g, '-');

/** A simple-object check convict formats can share. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** MQTT topic level: no wildcards, no separators, no empty string. */
const TOPIC_LEVEL = /^[^/#+\s]+$/;

convict.addFormat({
  name: 'topic-prefix',
  validate(value: unknown) {
    if (typeof value !== 'string' || value.length === 0) throw new Error('must be a non-empty string');
    for (const level of value.split('/')) {
      if (!TOPIC_LEVEL.test(level)) {
        throw new Error(`level "${level}" is not a valid MQTT topic level (no empty levels, '+', '#' or spaces)`);
      }
    }
  },
});

convict.addFormat({
  name: 'topic-level',
  validate(value: unknown) {
    if (typeof value !== 'string' || !TOPIC_LEVEL.test(value)) {
      throw new Error("must be a single MQTT topic level (no '/', '+', '#' or spaces)");
    }
  },
});

convict.addFormat({
  name: 'qos',
  validate(value: unknown) {
    if (value !== 0 && value !== 1 && value !== 2) throw new Error('must be 0, 1 or 2');
  },
  coerce: (value: unknown) => Number(value),
});

convict.addFormat({
  name: 'string-list',
  validate(value: unknown) {
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
      throw new Error('must be a list of strings');
    }
  },
  coerce: (value: unknown) => (typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value),
});

convict.addFormat({
  name: 'roi',
  validate(value: unknown) {
    if (value === null) return;
    if (!isPlainObject(value)) throw new Error('must be null or {x, y, width, height}');
    const keys = Object.keys(value).sort().join(',');
    if (keys !== 'height,width,x,y') throw new Error(`must have exactly the keys x, y, width, height (got ${keys || 'none'})`);
    for (const key of ['x', 'y'] as const) {
      const v = value[key];
      if (!Number.isInteger(v) || (v as number) < 0) throw new Error(`${key} must be an integer >= 0`);
    }
    for (const key of ['width', 'height'] as const) {
      const v = value[key];
      if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`${key} must be an integer >= 1`);
    }
  },
});

convict.addFormat({
  name: 'nullable-number',
  validate(value: unknown) {
    if (value !== null && (typeof value !== 'number' || !Number.isFinite(value))) {
      throw new Error('must be null or a finite number');
    }
  },
  coerce: (value: unknown) => (value === 'null' || value === '' ? null : Number(value)),
});

/** Schema of one camera entry; `cameras` is a list of these, each validated on its own. */
export const cameraSchema = {
  id: {
    doc: 'Camera id: one MQTT topic level, unique on this device. Results go to <prefix>/<id>/result.',
    format: 'topic-level',
    default: 'cam1',
  },
  enabled: { doc: 'Capture from this camera.', format: Boolean, default: true },
  source: {
    doc: 'Source kind: folder (images), file (video), usb (V4L2), gige (GigE Vision/USB3 Vision via aravissrc), rtsp, http, or gstreamer (a raw pipeline ending in appsink).',
    format: ['folder', 'file', 'usb', 'gige', 'rtsp', 'http', 'gstreamer'],
    default: 'folder',
  },
  path: {
    doc: 'folder: directory of images; file: video file path.',
    format: String,
    default: '',
  },
  loop: {
    doc: 'folder/file: start again at the end (true), or stop the camera after the last frame (false).',
    format: Boolean,
    default: true,
  },
  device: {
    doc: 'usb: V4L2 device index ("0") or path ("/dev/video0").',
    format: String,
    default: '0',
  },
  url: { doc: 'rtsp/http: stream URL (credentials in it are redacted in logs and config print).', format: String, default: '', sensitive: true },
  address: {
    doc: 'gige: camera IP address, serial number or name as aravis knows it (an IP is the most reliable).',
    format: String,
    default: '',
  },
  pixelFormat: {
    doc: 'gige: GenICam pixel format to request, e.g. Mono8, BayerRG8, RGB8Packed; empty keeps the camera default.',
    format: String,
    default: '',
  },
  pipeline: {
    doc: 'gstreamer: full pipeline that ends in "appsink" and delivers BGR frames, e.g. "videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink".',
    format: String,
    default: '',
  },
  width: { doc: 'usb/gige: requested frame width in pixels (0 = camera default).', format: 'nat', default: 0 },
  height: { doc: 'usb/gige: requested frame height in pixels (0 = camera default).', format: 'nat', default: 0 },
  fourcc: { doc: 'usb: requested FOURCC, e.g. MJPG or YUYV (empty = driver default).', format: String, default: '' },
  fps: {
    doc: 'Target frames per second taken from this camera (0 = as fast as the source delivers). Frames above the rate are skipped at the source.',
    format: Number,
    default: 0,
  },
  roi: {
    doc: 'Region of interest in full-frame pixels {x, y, width, height}, or null for the whole frame. Inference sees the ROI; region boxes are reported in full-frame coordinates.',
    format: 'roi',
    default: null as null | { x: number; y: number; width: number; height: number },
  },
  trigger: {
    doc: 'free: capture continuously. mqtt: capture the next frame when a message arrives on <prefix>/<id>/trigger; its payload (JSON {"id": "..."} or plain text) becomes the result\'s triggerId.',
    format: ['free', 'mqtt'],
    default: 'free',
  },
  stallTimeoutMs: {
    doc: 'In free-run, a camera that delivers no frame for this long is declared stalled and reopened (trigger mode waits on triggers, never stalls).',
    format: 'nat',
    default: 5000,
  },
  reconnectMinMs: { doc: 'First reopen delay after a capture failure; doubles per failure.', format: 'nat', default: 500 },
  reconnectMaxMs: { doc: 'Largest reopen delay after repeated capture failures.', format: 'nat', default: 30000 },
};

export type CameraConfig = {
  id: string;
  enabled: boolean;
  source: 'folder' | 'file' | 'usb' | 'gige' | 'rtsp' | 'http' | 'gstreamer';
  path: string;
  loop: boolean;
  device: string;
  url: string;
  address: string;
  pixelFormat: string;
  pipeline: string;
  width: number;
  height: number;
  fourcc: string;
  fps: number;
  roi: null | { x: number; y: number; width: number; height: number };
  trigger: 'free' | 'mqtt';
  stallTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
};

/** Validate one camera entry against cameraSchema; throws with the key path on bad input. */
export function validateCamera(entry: unknown, index: number): CameraConfig {
  if (!isPlainObject(entry)) throw new Error(`cameras[${index}]: must be an object`);
  for (const key of Object.keys(entry)) {
    if (!Object.prototype.hasOwnProperty.call(cameraSchema, key)) {
      throw new Error(`cameras[${index}].${key}: unknown camera field (known: ${Object.keys(cameraSchema).join(', ')})`);
    }
  }
  const camera = convict(cameraSchema);
  try {
    camera.load(entry);
    camera.validate({ allowed: 'strict' });
  } catch (err) {
    const message = (err as Error).message.replace(/^/gm, `cameras[${index}].`);
    throw new Error(message);
  }
  const props = camera.getProperties() as CameraConfig;
  const required: Partial<Record<CameraConfig['source'], keyof CameraConfig>> = {
    folder: 'path', file: 'path', rtsp: 'url', http: 'url', gige: 'address', gstreamer: 'pipeline',
  };
  const need = required[props.source];
  if (need && !props[need]) {
    throw new Error(`cameras[${index}].${need}: required for source "${props.source}"`);
  }
  return props;
}

convict.addFormat({
  name: 'camera-list',
  validate(value: unknown) {
    if (!Array.isArray(value)) throw new Error('must be a list of camera objects');
    const ids = new Set<string>();
    value.forEach((entry, i) => {
      const cam = validateCamera(entry, i);
      if (ids.has(cam.id)) throw new Error(`cameras[${i}].id: duplicate camera id "${cam.id}"`);
      ids.add(cam.id);
    });
  },
});

export const schema = {
  device: {
    id: {
      doc: 'Device id: the last level of the topic prefix and the name in every payload.',
      format: 'topic-level',
      default: hostname || 'crad-edge',
      env: 'CRAD_DEVICE_ID',
    },
  },
  log: {
    level: {
      doc: 'Log level (pino).',
      format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
      env: 'CRAD_LOG_LEVEL',
    },
  },
  cameras: {
    doc: 'Cameras to capture from: a list of camera objects (see "Camera fields").',
    format: 'camera-list',
    default: [] as unknown[],
  },
  model: {
    path: {
      doc: 'The CRAD ONNX model file (see the model contract). Relative paths are resolved against the config file.',
      format: String,
      default: 'models/demo/crad-demo.onnx',
      env: 'CRAD_MODEL',
    },
    modelsDir: {
      doc: 'Directory that remote model pushes may load from; a pushed path must resolve inside it.',
      format: String,
      default: '/var/lib/crad-edge/models',
    },
    executionProviders: {
      doc: 'onnxruntime execution providers in order of preference (tensorrt, cuda, cpu). Providers the installed runtime lacks are skipped with a log line; cpu is always the last resort.',
      format: 'string-list',
      default: ['cpu'],
    },
    intraOpThreads: { doc: 'onnxruntime intra-op threads (0 = one per core).', format: 'nat', default: 0 },
    interOpThreads: { doc: 'onnxruntime inter-op threads (0 = runtime default).', format: 'nat', default: 0 },
    graphOptimization: {
      doc: 'onnxruntime graph optimisation level.',
      format: ['disabled', 'basic', 'extended', 'all'],
      default: 'all',
    },
    memoryArena: { doc: 'Enable onnxruntime\'s CPU memory arena.', format: Boolean, default: true },
    warmupRuns: { doc: 'Inference runs on a blank batch at load, before the model serves frames.', format: 'nat', default: 1 },
    tensorrt: {
      fp16: { doc: 'TensorRT: allow FP16 kernels. onnxruntime-node 1.30 passes only the device id to TensorRT, so this and the two keys below take effect only with a binding that forwards them (a warning says so); see README "GPUs".', format: Boolean, default: true },
      engineCacheDir: {
        doc: 'TensorRT: directory for built engines (building takes minutes; keep it on persistent storage). Empty disables the cache.',
        format: String,
        default: '/var/lib/crad-edge/trt-cache',
      },
      workspaceBytes: { doc: 'TensorRT: max workspace size in bytes.', format: 'nat', default: 1073741824 },
    },
    cuda: {
      deviceId: { doc: 'CUDA/TensorRT device index.', format: 'nat', default: 0 },
    },
  },
  inference: {
    maxBatch: {
      doc: 'Largest batch of frames (across cameras) sent to the model in one run.',
      format: 'nat',
      default: 4,
    },
    maxWaitMs: {
      doc: 'Longest time a frame waits for others to fill a batch before the batch runs anyway.',
      format: 'nat',
      default: 5,
    },
    imageThreshold: {
      doc: 'Override the model\'s calibrated image threshold (raw score units); null uses the model\'s.',
      format: 'nullable-number',
      default: null as number | null,
    },
    pixelThreshold: {
      doc: 'Override the model\'s calibrated pixel threshold (raw map units) for defect regions; null uses the model\'s.',
      format: 'nullable-number',
      default: null as number | null,
    },
    sensitivity: {
      doc: 'Verdict offset: NG when normalized >= 0.5 + sensitivity. Negative = stricter (more NG), positive = more lenient. Range -0.5..0.5.',
      format: Number,
      default: 0,
    },
  },
  regions: {
    enabled: { doc: 'Report defect regions (connected components of the thresholded map).', format: Boolean, default: true },
    minArea: {
      doc: 'Smallest region kept, in pixels of the full-resolution frame.',
      format: 'nat',
      default: 64,
    },
    topK: { doc: 'Most regions reported per frame (largest peak score first).', format: 'nat', default: 5 },
  },
  crops: {
    enabled: { doc: 'Publish a JPEG crop of each reported region from the full-resolution frame.', format: Boolean, default: true },
    onlyNG: { doc: 'Publish crops only for NG verdicts.', format: Boolean, default: true },
    margin: { doc: 'Margin around each region box, in frame pixels.', format: 'nat', default: 16 },
    maxSize: { doc: 'Longest side of a crop in pixels (larger crops are scaled down).', format: 'nat', default: 512 },
    quality: { doc: 'JPEG quality of crops (1-100).', format: 'nat', default: 85 },
  },
  overlay: {
    enabled: { doc: 'Publish a heatmap overlay JPEG of the inspected image.', format: Boolean, default: false },
    onlyNG: { doc: 'Publish overlays only for NG verdicts.', format: Boolean, default: true },
    alpha: { doc: 'Heatmap opacity over the image (0..1).', format: Number, default: 0.5 },
    maxSize: { doc: 'Longest side of the overlay in pixels.', format: 'nat', default: 640 },
    quality: { doc: 'JPEG quality of overlays (1-100).', format: 'nat', default: 80 },
  },
  mqtt: {
    url: {
      doc: 'Broker URL: mqtt://host:1883 or mqtts://host:8883 (TLS).',
      format: String,
      default: 'mqtt://127.0.0.1:1883',
      env: 'CRAD_MQTT_URL',
    },
    protocolVersion: {
      doc: 'MQTT protocol: 5 (binary crops with content-type/correlation properties) or 4 (3.1.1; binaries as base64 JSON).',
      format: [4, 5],
      default: 5,
    },
    clientId: { doc: 'MQTT client id (empty = crad-edge-<device id>).', format: String, default: '' },
    username: { doc: 'MQTT username (empty = none).', format: String, default: '', env: 'CRAD_MQTT_USERNAME' },
    password: { doc: 'MQTT password.', format: String, default: '', sensitive: true, env: 'CRAD_MQTT_PASSWORD' },
    keepaliveSec: { doc: 'MQTT keepalive in seconds.', format: 'nat', default: 30 },
    connectTimeoutMs: { doc: 'Give up one broker connection attempt (TCP + TLS + CONNACK) after this long, then back off and retry.', format: 'nat', default: 10000 },
    topicPrefix: {
      doc: 'ISA-95 style topic prefix without the device level, e.g. acme/plant1/line3. Topics are <topicPrefix>/<device.id>/...',
      format: 'topic-prefix',
      default: 'crad',
    },
    tls: {
      ca: { doc: 'TLS: CA certificate file (PEM) to trust for the broker.', format: String, default: '' },
      cert: { doc: 'TLS: client certificate file (PEM).', format: String, default: '' },
      key: { doc: 'TLS: client private key file (PEM).', format: String, default: '', sensitive: true },
      rejectUnauthorized: { doc: 'TLS: reject brokers whose certificate does not verify.', format: Boolean, default: true },
    },
    reconnectMinMs: { doc: 'First broker reconnect delay; doubles per failed attempt, with full jitter.', format: 'nat', default: 1000 },
    reconnectMaxMs: { doc: 'Largest broker reconnect delay.', format: 'nat', default: 60000 },
    qos: {
      result: { doc: 'QoS of result messages.', format: 'qos', default: 1 },
      image: { doc: 'QoS of crop and overlay messages.', format: 'qos', default: 0 },
      status: { doc: 'QoS of status messages.', format: 'qos', default: 1 },
    },
    retain: {
      result: { doc: 'Retain the latest result per camera.', format: Boolean, default: false },
      image: { doc: 'Retain the latest crop/overlay.', format: Boolean, default: false },
    },
  },
  outbox: {
    path: {
      doc: 'SQLite file of the store-and-forward outbox (results wait here until the broker acknowledges them).',
      format: String,
      default: '/var/lib/crad-edge/outbox.sqlite',
      env: 'CRAD_OUTBOX',
    },
    maxBytes: { doc: 'Largest outbox size in bytes; oldest messages are dropped (and counted) beyond it.', format: 'nat', default: 512 * 1024 * 1024 },
    maxAgeHours: { doc: 'Messages older than this are dropped (and counted).', format: Number, default: 72 },
    includeImages: { doc: 'Keep crops and overlays in the outbox too (otherwise they are sent only while connected).', format: Boolean, default: false },
    inflight: {
      doc: 'Most outbox messages sent and not yet acknowledged at a time (paces a replay after an outage); the broker\'s MQTT 5 Receive Maximum lowers it further.',
      format: 'nat',
      default: 20,
    },
  },
  remoteConfig: {
    enabled: { doc: 'Accept configuration pushes on <prefix>/config/set.', format: Boolean, default: true },
    allow: {
      doc: 'Keys (or key prefixes ending in ".") that a remote push may change. The allow-list and the public key can never be changed remotely.',
      format: 'string-list',
      default: ['inference.', 'regions.', 'crops.', 'overlay.', 'cameras', 'model.path', 'mqtt.qos.', 'mqtt.retain.'],
    },
    publicKey: {
      doc: 'Ed25519 public key (PEM or base64 SPKI DER) that signs pushes; when set, unsigned or badly signed pushes are rejected.',
      format: String,
      default: '',
    },
    maxPayloadBytes: { doc: 'Largest accepted config push.', format: 'nat', default: 65536 },
    revision: {
      doc: 'Revision of this configuration: 0 for a hand-written file, raised by one by every applied remote push, which must name it as its baseRevision. Written by the daemon when it persists a pushed config; a push can never set it.',
      format: 'nat',
      default: 0,
    },
  },
  service: {
    stateDir: {
      doc: 'Writable state directory (persisted config, TensorRT cache). systemd sets it via StateDirectory.',
      format: String,
      default: '/var/lib/crad-edge',
      env: 'STATE_DIRECTORY',
    },
    shutdownTimeoutMs: { doc: 'Longest graceful shutdown before the daemon exits anyway.', format: 'nat', default: 10000 },
    statusIntervalMs: { doc: 'How often the status topic and systemd STATUS are refreshed.', format: 'nat', default: 10000 },
    watchdogStallMs: {
      doc: 'In free-run, systemd watchdog pings stop when no frame has been processed for this long (so a hung pipeline is restarted).',
      format: 'nat',
      default: 30000,
    },
  },
};

export type Config = ReturnType<typeof makeConfig>;

export function makeConfig() {
  return convict(schema);
}

/** A convict property tree, for tools that walk the schema (docs, remote allow-list). */
export type SchemaNode = { [key: string]: SchemaNode | SchemaLeaf };
export type SchemaLeaf = { doc: string; format: unknown; default: unknown; env?: string; sensitive?: boolean };

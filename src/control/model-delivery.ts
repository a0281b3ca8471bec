// Model delivery (<prefix>/model/deliver): a request names a model file by URL, size and sha256,
// signed like a config push when remoteConfig.publicKey is set. The file is downloaded into
// <modelsDir>/.partial (resumable with Range, bounded, with connect/idle/total timeouts), checked
// (size, hash, model contract) and only then given its final name in modelsDir. The daemon then
// swaps it in through its config push path (golden samples, revision, audit).
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { MAX_TRANSACTION_LENGTH } from '../config/push-request.js';
import { canonicalJson, parsePublicKey } from '../config/push-signing.js';
import { readModelFile } from '../inference/model-file.js';

/** Signed bytes start with this, so no config-push signature verifies as a delivery (and back). */
export const DELIVERY_SIGNING_CONTEXT = 'crad-edge/model-deliver/v1';

export interface ModelDeliveryRequest {
  transaction: string;
  /** The configuration revision the delivery is meant for (makes a signed request single-use). */
  baseRevision: number;
  url: string;
  /** Hex sha256 of the file. */
  sha256: string;
  size: number;
  /** File name in modelsDir; default model-<first 16 hex of sha256>.onnx. */
  name?: string;
  /** The sender's MQTT client id, for the audit log (senders without MQTT 5 user properties). */
  clientId?: string;
  signature?: string;
}

export interface DeliveryLimits {
  maxBytes: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  /** CA file (PEM) trusted besides the system CAs; empty = system CAs. */
  ca: string;
}

export type DeliveryStage = 'accepted' | 'downloading' | 'downloaded' | 'verified' | 'contract' | 'golden' | 'applied';

/** A delivery that failed at `stage`; the message says what to do about it. */
export class DeliveryError extends Error {
  constructor(readonly stage: DeliveryStage, message: string) {
    super(message);
  }
}

const FIELDS = new Set(['transaction', 'baseRevision', 'url', 'sha256', 'size', 'name', 'clientId', 'signature']);
const SHA256_HEX = /^[0-9a-f]{64}$/;
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.onnx$/;
const SIGNATURE_BASE64 = /^[A-Za-z0-9+/]{86}==$/;
const MAX_REQUEST_BYTES = 8192;

/** The bytes a delivery signature covers: context, device id, canonical JSON of the request less its signature. */
export function deliverySigningBytes(request: Record<string, unknown>, deviceId: string): Buffer {
  const unsigned = Object.fromEntries(Object.entries(request).filter(([key]) => key !== 'signature'));
  return Buffer.from(`${DELIVERY_SIGNING_CONTEXT}\n${deviceId}\n${canonicalJson(unsigned)}`, 'utf8');
}

export function signDelivery(request: Omit<ModelDeliveryRequest, 'signature'>, privateKey: crypto.KeyObject | string, deviceId: string): ModelDeliveryRequest {
  const key = typeof privateKey === 'string' ? crypto.createPrivateKey(privateKey) : privateKey;
  const signature = crypto.sign(null, deliverySigningBytes(request as Record<string, unknown>, deviceId), key).toString('base64');
  return { ...request, signature };
}

/**
 * Check a delivery request completely (shape, revision, signature, limits) before anything is
 * downloaded; throws a DeliveryError at stage "accepted" naming the problem.
 */
export function parseDeliveryRequest(payload: Buffer, options: { revision: number; publicKey: string; deviceId: string; maxBytes: number }): ModelDeliveryRequest {
  const refuse = (message: string): never => {
    throw new DeliveryError('accepted', message);
  };
  if (payload.length > MAX_REQUEST_BYTES) refuse(`request is ${payload.length} bytes; at most ${MAX_REQUEST_BYTES}`);
  let request: Record<string, unknown>;
  try {
    request = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    return refuse(`request is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) refuse('request must be a JSON object');
  for (const key of Object.keys(request)) if (!FIELDS.has(key)) refuse(`unknown field ${JSON.stringify(key)} (expected ${[...FIELDS].join(', ')})`);
  const { transaction, baseRevision, url, sha256, size, name, clientId } = request;
  if (typeof transaction !== 'string' || transaction.length === 0 || [...transaction].length > MAX_TRANSACTION_LENGTH || /[\u0000-\u001f\u007f]/.test(transaction)) {
    refuse(`transaction must be a string of 1 to ${MAX_TRANSACTION_LENGTH} characters without control characters`);
  }
  if (typeof baseRevision !== 'number' || !Number.isSafeInteger(baseRevision) || baseRevision < 0) refuse('baseRevision must be a non-negative integer');
  if (baseRevision !== options.revision) refuse(`stale baseRevision ${String(baseRevision)}: the current revision is ${options.revision}`);
  if (typeof url !== 'string') return refuse('url must be a string');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse(`url ${JSON.stringify(url.slice(0, 200))} is not a valid URL`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') refuse(`url must be http or https, not ${parsed.protocol.replace(/:$/, '')}`);
  if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) refuse('sha256 must be 64 lower-case hex digits');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) refuse('size must be a positive integer (bytes)');
  if ((size as number) > options.maxBytes) refuse(`size ${String(size)} is over the limit of ${options.maxBytes} bytes (model.delivery.maxBytes)`);
  if (name !== undefined && (typeof name !== 'string' || !FILE_NAME.test(name))) refuse('name must be a plain file name ending in .onnx (letters, digits, ".", "_", "-")');
  if (clientId !== undefined && typeof clientId !== 'string') refuse('clientId must be a string');
  if (options.publicKey.trim() !== '') {
    const signature = request.signature;
    if (typeof signature !== 'string' || !SIGNATURE_BASE64.test(signature)) refuse('signature is missing or not the base64 of a 64-byte Ed25519 signature: this device accepts only signed deliveries (remoteConfig.publicKey is set)');
    if (!crypto.verify(null, deliverySigningBytes(request, options.deviceId), parsePublicKey(options.publicKey), Buffer.from(signature as string, 'base64'))) {
      refuse('signature does not verify against remoteConfig.publicKey for this device and request');
    }
  }
  return request as unknown as ModelDeliveryRequest;
}

export function deliveryFileName(request: ModelDeliveryRequest): string {
  return request.name ?? `model-${request.sha256.slice(0, 16)}.onnx`;
}

/** Where a download grows: hidden from anything that looks for .onnx files in modelsDir. */
export function partialPath(modelsDir: string, sha256: string): string {
  return path.join(modelsDir, '.partial', `${sha256}.part`);
}

export interface DownloadProgress {
  (event: { resumedFrom: number; status: number }): void;
}

/**
 * Download `url` into `file` until it holds `size` bytes, continuing a partial file with a Range
 * request. Never writes past `size`. Throws a DeliveryError (stage "downloading") on every failure;
 * the partial file stays for a resumed attempt.
 */
export async function download(url: string, file: string, size: number, limits: DeliveryLimits, onStart?: DownloadProgress): Promise<void> {
  const fail = (message: string) => new DeliveryError('downloading', message);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let have = fs.existsSync(file) ? fs.statSync(file).size : 0;
  if (have > size) {
    fs.rmSync(file);
    have = 0;
  }
  if (have === size) return;
  await checkFreeSpace(path.dirname(file), size - have);
  const client = url.startsWith('https:') ? https : http;
  // Extra CAs add to Node's bundled ones rather than replace them.
  let ca = {};
  try {
    if (limits.ca) ca = { ca: [...tls.rootCertificates, fs.readFileSync(limits.ca, 'utf8')] };
  } catch (err) {
    throw fail(`cannot read model.delivery.ca: ${(err as Error).message}`);
  }
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    let out: fs.WriteStream | null = null;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      clearTimeout(connect);
      request.destroy();
      const finish = () => (err ? reject(err) : resolve());
      if (out) out.end(finish);
      else finish();
    };
    const total = setTimeout(() => done(fail(`download took longer than ${limits.totalTimeoutMs} ms (model.delivery.totalTimeoutMs)`)), limits.totalTimeoutMs);
    const connect = setTimeout(() => done(fail(`the server did not answer within ${limits.connectTimeoutMs} ms (model.delivery.connectTimeoutMs)`)), limits.connectTimeoutMs);
    const request = client.get(url, { ...ca, headers: have > 0 ? { Range: `bytes=${have}-` } : {} }, (response) => {
      clearTimeout(connect);
      const status = response.statusCode ?? 0;
      let offset = have;
      if (status === 200) offset = 0;
      else if (status === 206) {
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers['content-range'] ?? '');
        if (!range || Number(range[1]) !== have) return done(fail(`the server answered the range request with Content-Range ${JSON.stringify(response.headers['content-range'] ?? '')}, not bytes ${have}-`));
      } else {
        return done(fail(`the server answered HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}`));
      }
      const length = response.headers['content-length'];
      if (length !== undefined && offset + Number(length) !== size) {
        return done(fail(`the server announces ${offset + Number(length)} bytes, the request said ${size}`));
      }
      onStart?.({ resumedFrom: offset, status });
      out = fs.createWriteStream(file, offset > 0 ? { flags: 'a' } : { flags: 'w' });
      out.on('error', (err: NodeJS.ErrnoException) => done(fail(err.code === 'ENOSPC' ? `the disk is full (${path.dirname(file)})` : `cannot write ${file}: ${err.message}`)));
      let written = offset;
      response.setTimeout(limits.idleTimeoutMs, () => done(fail(`no data for ${limits.idleTimeoutMs} ms after ${written} of ${size} bytes (model.delivery.idleTimeoutMs)`)));
      response.on('data', (chunk: Buffer) => {
        if (written + chunk.length > size) return done(fail(`the server sent more than the ${size} bytes announced`));
        written += chunk.length;
        out!.write(chunk);
      });
      response.on('aborted', () => done(fail(`the connection closed after ${written} of ${size} bytes`)));
      response.on('error', (err) => done(fail(`the download broke off after ${written} of ${size} bytes: ${err.message}`)));
      response.on('end', () => done(written === size ? undefined : fail(`the body ended after ${written} of ${size} bytes (truncated)`)));
    });
    request.on('error', (err) => done(fail(`cannot fetch ${redactUrl(url)}: ${err.message}`)));
  });
}

async function checkFreeSpace(dir: string, needed: number): Promise<void> {
  const stats = await fs.promises.statfs(dir);
  const free = stats.bavail * stats.bsize;
  if (free < needed) throw new DeliveryError('downloading', `the disk is full: ${needed} bytes needed in ${dir}, ${free} free`);
}

/** sha256 of a file, hex. */
export async function fileSha256(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Size and hash of the downloaded file; a mismatch removes it (a resume would only extend a wrong file). */
export async function verifyDownload(file: string, request: ModelDeliveryRequest): Promise<void> {
  const size = fs.statSync(file).size;
  const hash = await fileSha256(file);
  if (size !== request.size || hash !== request.sha256) {
    fs.rmSync(file, { force: true });
    throw new DeliveryError('verified', size !== request.size
      ? `the file has ${size} bytes, the request said ${request.size}`
      : `sha256 mismatch: the file is ${hash}, the request said ${request.sha256}`);
  }
}

/** The model contract, checked on the file before it gets a name a push can use. */
export async function checkDeliveredContract(file: string): Promise<void> {
  try {
    await readModelFile(file);
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw new DeliveryError('contract', (err as Error).message);
  }
}

/** A URL as logs and answers may show it (no credentials, no query). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

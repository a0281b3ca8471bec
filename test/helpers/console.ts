// The operator console from outside: its address (from the daemon's log), HTTP calls with or
// without credentials, and a real Prometheus that scrapes it.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import cv from '../../src/cv.js';
import { killOnExit, tempDir } from './cleanup.js';
import { demoModel, samplesDir, writeConfig, type DaemonProcess } from './daemon.js';
import { freePort } from './mosquitto.js';
import { until } from './publish-fixtures.js';

/** The frame-number code written into a numbered frame: FRAME_BITS blocks of FRAME_BLOCK px, top left. */
export const FRAME_BITS = 8;
export const FRAME_BLOCK = 8;

interface Sample { file: string; expected: 'OK' | 'NG' }

/** The sample images with what each shows (samples/manifest.json). */
export function samples(): Sample[] {
  return (JSON.parse(fs.readFileSync(path.join(samplesDir, 'manifest.json'), 'utf8')) as { images: Sample[] }).images;
}

/**
 * `count` frames in a new folder: frame k is sample k mod 12 below a band of FRAME_BLOCK rows that
 * holds k (black/white blocks, read back from the page's canvas). `roi` is the sample's part, so
 * the model judges the sample as it is (the band alone would make every frame NG). A folder
 * camera reads frame k as sequence k + 1 while it does not reopen.
 */
export function numberedFrames(count: number): { dir: string; roi: { x: number; y: number; width: number; height: number }; sampleOf: (k: number) => Sample } {
  const dir = tempDir('numbered-frames');
  const all = samples();
  let roi = { x: 0, y: FRAME_BLOCK, width: 0, height: 0 };
  for (let k = 0; k < count; k++) {
    const sample = cv.imread(path.join(samplesDir, all[k % all.length]!.file), cv.IMREAD_COLOR);
    const image = new cv.Mat(sample.rows + FRAME_BLOCK, sample.cols, cv.CV_8UC3, [128, 128, 128]);
    sample.copyTo(image.getRegion(new cv.Rect(0, FRAME_BLOCK, sample.cols, sample.rows)));
    for (let bit = 0; bit < FRAME_BITS; bit++) {
      const level = (k >> bit) & 1 ? 255 : 0;
      image.getRegion(new cv.Rect(bit * FRAME_BLOCK, 0, FRAME_BLOCK, FRAME_BLOCK)).setTo(new cv.Vec3(level, level, level));
    }
    roi = { x: 0, y: FRAME_BLOCK, width: sample.cols, height: sample.rows };
    cv.imwrite(path.join(dir, `frame-${String(k).padStart(4, '0')}.png`), image);
    for (const m of [sample, image]) m.release();
  }
  return { dir, roi, sampleOf: (k) => all[k % all.length]! };
}

/**
 * The browser tests' daemon: one looping folder camera playing numbered `frames` at 5/s with their
 * ROI, the console on CONSOLE_HOST beyond loopback with `token` (a page without it only reads) at
 * `liveFps`, the NG archive on; `extra` adds or replaces top-level sections.
 */
export function numberedFramesConfig(stateDir: string, mqtt: { url: string; topicPrefix: string }, frames: ReturnType<typeof numberedFrames>, token: string, liveFps: number, extra: Record<string, unknown> = {}): string {
  return writeConfig({
    device: { id: 'line1' },
    model: { path: demoModel },
    cameras: [{ id: 'cam1', source: 'folder', path: frames.dir, loop: true, fps: 5, roi: frames.roi }],
    mqtt: { reconnectMinMs: 200, reconnectMaxMs: 1000, ...mqtt },
    crops: { enabled: false },
    http: { enabled: true, host: CONSOLE_HOST, port: 0, liveFps, token, openReadOnly: true },
    archive: { enabled: true },
    ...extra,
  }, stateDir);
}

/** Where the console tests bind it: beyond loopback by the console's rule (only 127.0.0.1, ::1, localhost are not). */
export const CONSOLE_HOST = '127.0.0.2';

/** A daemon config in its own temp dir: one looping folder camera, the broker `mqtt`, the console on CONSOLE_HOST with `http`. */
export function consoleConfig(id: string, mqtt: { url: string; topicPrefix: string }, http: Record<string, unknown>): string {
  return writeConfig({
    device: { id },
    model: { path: demoModel },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 5 }],
    mqtt: { reconnectMinMs: 200, reconnectMaxMs: 1000, ...mqtt },
    crops: { enabled: false },
    service: { statusIntervalMs: 1000 },
    http: { enabled: true, host: CONSOLE_HOST, port: 0, ...http },
  }, tempDir(`console-${id}`));
}

/** The console's base URL, once the daemon has logged that it listens. */
export async function consoleUrl(daemon: DaemonProcess): Promise<string> {
  const address = () => daemon.logs().find((l) => l.msg === 'operator console listening')?.address as string | undefined;
  await until('the console listens', () => address() !== undefined, 90_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${daemon.output.slice(-3000)}`);
  });
  return address()!;
}

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/** A console call; `ca` (a PEM file) makes it HTTPS that trusts only that CA (and verifies). */
export async function call(url: string, options: { method?: string; token?: string; basic?: [string, string]; body?: unknown; raw?: string; ca?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.basic) headers.authorization = `Basic ${Buffer.from(options.basic.join(':')).toString('base64')}`;
  const body = options.raw ?? (options.body !== undefined ? JSON.stringify(options.body) : undefined);
  if (body !== undefined) headers['content-type'] = 'application/json';
  const method = options.method ?? (body !== undefined ? 'POST' : 'GET');
  const { status, headers: responseHeaders, text } = options.ca
    ? await httpsRequest(url, method, headers, body, fs.readFileSync(options.ca))
    : await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}) }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }));
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (metrics, pages)
  }
  return { status, headers: responseHeaders, text, json };
}

/** fetch() takes no CA of its own: node:https, one connection per call (no agent keeps it open). */
function httpsRequest(url: string, method: string, headers: Record<string, string>, body: string | undefined, ca: Buffer): Promise<Omit<Reply, 'json'>> {
  return new Promise((resolve, reject) => {
    const request = https.request(url, { method, headers, ca, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.once('error', reject);
      response.once('end', () => resolve({
        status: response.statusCode!,
        headers: new Headers(Object.entries(response.headers).flatMap(([name, value]) => (value === undefined ? [] : [[name, String(value)] as [string, string]]))),
        text: Buffer.concat(chunks).toString('utf8'),
      }));
    });
    request.once('error', reject);
    request.end(body);
  });
}

/** Poll an async condition until it holds, or fail naming `what`. */
export async function eventually(what: string, holds: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await holds())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Debian's Prometheus on a free loopback port, scraping `target` (host:port) every second. */
export class Prometheus {
  private constructor(readonly url: string, private readonly child: ChildProcess) {}

  static async start(target: string, bearerToken: string): Promise<Prometheus> {
    const dir = tempDir('prometheus');
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(config, [
      'global:', '  scrape_interval: 1s', '  scrape_timeout: 1s',
      'scrape_configs:', '  - job_name: crad-edge', '    authorization:', `      credentials: ${bearerToken}`,
      '    static_configs:', `      - targets: ['${target}']`, '',
    ].join('\n'));
    const port = await freePort();
    const child = killOnExit(spawn('/usr/bin/prometheus', [
      `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`,
    ], { stdio: 'ignore' }));
    const prometheus = new Prometheus(`http://127.0.0.1:${port}`, child);
    await eventually('prometheus is ready', async () => (await fetch(`${prometheus.url}/-/ready`).catch(() => null))?.ok === true, 60_000);
    return prometheus;
  }

  /** An instant query's result vector. */
  async query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
    const response = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await response.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${JSON.stringify(body)}`);
    return body.data.result;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

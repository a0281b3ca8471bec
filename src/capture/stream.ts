// Network stream (RTSP, HTTP MJPEG/HLS) through OpenCV's FFmpeg backend.
import net from 'node:net';
import cv from '../cv.js';
import { VideoCaptureSource } from './source.js';
import { redactUrls } from '../shared/redact.js';

const DEFAULT_PORTS: Record<string, number> = { 'rtsp:': 554, 'rtsps:': 322, 'http:': 80, 'https:': 443 };
const CONNECT_TIMEOUT_MS = 3000;

export class StreamSource extends VideoCaptureSource {
  readonly live = true;
  readonly description: string;
  private readonly host: string;
  private readonly port: number;

  constructor(kind: 'rtsp' | 'http', private readonly url: string) {
    super();
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`${kind} url is not a valid URL: "${redactUrls(url)}"`);
    }
    const allowed = kind === 'rtsp' ? ['rtsp:', 'rtsps:'] : ['http:', 'https:'];
    if (!allowed.includes(parsed.protocol)) {
      throw new Error(`${kind} url must start with ${allowed.map((p) => `${p}//`).join(' or ')}, got "${redactUrls(url)}"`);
    }
    this.host = parsed.hostname.replace(/^\[|\]$/g, '');
    this.port = parsed.port ? Number(parsed.port) : DEFAULT_PORTS[parsed.protocol]!;
    this.description = `${kind} stream ${redactUrls(url)}`;
  }

  protected override async preflight(): Promise<void> {
    // FFmpeg's open is synchronous here and waits up to 30 s on an unreachable host; a TCP
    // connect first fails fast without blocking the event loop.
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      const fail = (why: string) => {
        socket.destroy();
        reject(new Error(`cannot open ${this.description}: ${why}`));
      };
      socket.setTimeout(CONNECT_TIMEOUT_MS, () => fail(`no TCP connection to ${this.host}:${this.port} within ${CONNECT_TIMEOUT_MS} ms`));
      socket.once('error', (err) => fail(err.message));
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
    });
  }

  protected target() {
    return { target: this.url, api: cv.CAP_FFMPEG };
  }
}

// GigE Vision / USB3 Vision camera through aravis's GStreamer element (aravissrc) and OpenCV's
// GStreamer backend. Address the camera by IP where possible: aravis then talks to it directly,
// while by name or serial it runs discovery on every interface and may pick the wrong one.
import dgram from 'node:dgram';
import net from 'node:net';
import cv from '../cv.js';
import type { Logger } from '../shared/log.js';
import { VideoCaptureSource } from './source.js';

export interface GigeOptions {
  address: string;
  pixelFormat: string;
  width: number;
  height: number;
}

/** GenICam pixel format -> caps aravissrc negotiates it from (it sets PixelFormat from the caps). */
const PIXEL_FORMAT_CAPS: Record<string, { caps: string; debayer?: boolean }> = {
  Mono8: { caps: 'video/x-raw,format=GRAY8' },
  Mono16: { caps: 'video/x-raw,format=GRAY16_LE' },
  RGB8: { caps: 'video/x-raw,format=RGB' },
  RGB8Packed: { caps: 'video/x-raw,format=RGB' },
  BGR8: { caps: 'video/x-raw,format=BGR' },
  BGR8Packed: { caps: 'video/x-raw,format=BGR' },
  YUV422Packed: { caps: 'video/x-raw,format=UYVY' },
  YUV422_8_UYVY: { caps: 'video/x-raw,format=UYVY' },
  YUV422_YUYVPacked: { caps: 'video/x-raw,format=YUY2' },
  YUV422_8: { caps: 'video/x-raw,format=YUY2' },
  // Bayer needs bayer2rgb (gstreamer1.0-plugins-bad).
  BayerRG8: { caps: 'video/x-bayer,format=rggb', debayer: true },
  BayerBG8: { caps: 'video/x-bayer,format=bggr', debayer: true },
  BayerGB8: { caps: 'video/x-bayer,format=gbrg', debayer: true },
  BayerGR8: { caps: 'video/x-bayer,format=grbg', debayer: true },
};

export const GVCP_PORT = 3956;

/** Build the aravissrc pipeline for a camera; exported so the pipeline text can be logged/tested. */
export function gigePipeline(options: GigeOptions): string {
  const address = options.address.trim();
  if (address === '' || /[\s!"'=]/.test(address)) {
    throw new Error(`gige address must be an IP, serial or camera name without spaces or quotes, got "${options.address}"`);
  }
  const caps: string[] = [];
  let debayer = false;
  if (options.pixelFormat) {
    const known = PIXEL_FORMAT_CAPS[options.pixelFormat];
    if (!known) {
      throw new Error(`gige pixelFormat "${options.pixelFormat}" is not supported; use one of ${Object.keys(PIXEL_FORMAT_CAPS).join(', ')}`);
    }
    caps.push(known.caps);
    debayer = known.debayer === true;
  }
  if (options.width > 0) caps.push(`width=${options.width}`);
  if (options.height > 0) caps.push(`height=${options.height}`);
  if (caps.length > 0 && !options.pixelFormat) caps.unshift('video/x-raw');
  return [
    `aravissrc camera-name=${address}`,
    ...(caps.length > 0 ? [caps.join(',')] : []),
    ...(debayer ? ['bayer2rgb'] : []),
    'videoconvert',
    'video/x-raw,format=BGR',
    // Keep only the newest frames: a slow consumer must not grow an unbounded queue.
    'appsink max-buffers=2 drop=true sync=false',
  ].join(' ! ');
}

/** Ask a GigE Vision device at an IPv4 address whether it is there (GVCP DISCOVERY, unicast).
 * Resolves true on a DISCOVERY_ACK, false when nothing answers in timeoutMs. */
export function gvcpDiscover(ip: string, timeoutMs = 500, port = GVCP_PORT): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const finish = (answered: boolean) => {
      clearTimeout(timer);
      socket.close();
      resolve(answered);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('error', () => finish(false));
    socket.on('message', (msg) => {
      // Ack header: status(2) answer(2) length(2) ack_id(2); DISCOVERY_ACK is 0x0003.
      if (msg.length >= 8 && msg.readUInt16BE(2) === 0x0003) finish(true);
    });
    // Command header: key 0x42, flags (ack required | broadcast ack allowed), DISCOVERY_CMD 0x0002,
    // payload length 0, request id 1.
    socket.send(Buffer.from([0x42, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01]), port, ip, (err) => {
      if (err) finish(false);
    });
  });
}

type VideoCapture = import('@u4/opencv4nodejs').VideoCapture;

/** Captures whose camera stopped answering, by IP, waiting to be released until it answers again.
 * Releasing an aravis pipeline whose camera is gone runs GVCP register writes that each time out
 * (about 13 s in all) on the calling thread — the event loop, in opencv4nodejs. Released once the
 * camera answers, it takes milliseconds. */
const unreleased = new Map<string, VideoCapture[]>();
const draining = new Map<string, Promise<void>>();
const RELEASE_RETRY_MS = 1000;

async function cameraAnswers(ip: string): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await gvcpDiscover(ip)) return true;
  }
  return false;
}

function releaseNow(ip: string): void {
  for (const capture of unreleased.get(ip) ?? []) capture.release();
  unreleased.delete(ip);
}

/** Release the captures held for ip as soon as the camera answers; retries in the background. */
function drainUnreleased(ip: string): Promise<void> {
  const running = draining.get(ip);
  if (running) return running;
  const drain = (async () => {
    try {
      while (unreleased.has(ip)) {
        if (await cameraAnswers(ip)) {
          releaseNow(ip);
          return;
        }
        // Unref'd: a camera that never returns must not keep the process alive.
        await new Promise<void>((resolve) => setTimeout(resolve, RELEASE_RETRY_MS).unref());
      }
    } finally {
      draining.delete(ip);
    }
  })();
  draining.set(ip, drain);
  return drain;
}

/** Captures of gige cameras still waiting for their camera to answer before release. */
export function unreleasedGigeCaptures(): number {
  let n = 0;
  for (const list of unreleased.values()) n += list.length;
  return n;
}

export class GigeSource extends VideoCaptureSource {
  readonly live = true;
  readonly description: string;
  private readonly pipeline: string;

  constructor(private readonly options: GigeOptions, log: Logger) {
    super();
    this.pipeline = gigePipeline(options);
    this.description = `gige camera ${options.address}`;
    if (!net.isIPv4(options.address.trim())) {
      log.warn({ address: options.address }, 'gige camera addressed by name/serial: opening it runs discovery on every interface and blocks while the camera is absent; an IP address is more reliable');
    }
  }

  private get ip(): string | null {
    const address = this.options.address.trim();
    return net.isIPv4(address) ? address : null;
  }

  protected override async preflight(): Promise<void> {
    // aravis blocks the (synchronous) open for seconds when the camera is absent; a GVCP
    // discovery first keeps the event loop free while a camera is off the network.
    const ip = this.ip;
    if (!ip) return;
    if (!(await cameraAnswers(ip))) {
      throw new Error(`cannot open ${this.description}: no GigE Vision device answers at ${ip}:${GVCP_PORT}`);
    }
    // The previous capture of this camera goes first: released after the new one opened, its
    // teardown would stop the new stream's acquisition.
    releaseNow(ip);
  }

  /** Settles when the capture is released: at once for a camera that answers, else when it
   * answers again (a stopping daemon bounds the wait; process exit then frees it). */
  override close(): void | Promise<void> {
    const ip = this.ip;
    const capture = this.capture;
    if (!ip || !capture) {
      super.close();
      return;
    }
    this.capture = null;
    unreleased.set(ip, [...(unreleased.get(ip) ?? []), capture]);
    return drainUnreleased(ip);
  }

  protected target() {
    return { target: this.pipeline, api: cv.CAP_GSTREAMER };
  }
}

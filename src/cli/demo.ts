// `crad-edge demo`: everything on one machine with nothing installed beside the repo — an embedded
// MQTT broker (aedes, MQTT 3.1.1), the committed demo model, the sample images as a camera, and
// the operator console on loopback (a free port unless --console-port says which), printed.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { loadConfig } from '../config/load.js';
import { Daemon } from '../service/daemon.js';
import { createLogger } from '../shared/log.js';
import { projectRoot } from '../paths.js';


export interface DemoOptions {
  port: number;
  /** Console port on 127.0.0.1 (0 = a free one); false = no console. */
  consolePort: number | false;
  frames?: number;
  fps: number;
}

export async function demoCommand(opts: DemoOptions): Promise<number> {
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, '127.0.0.1', resolve);
    });
  } catch (err) {
    console.error(`demo: cannot listen on 127.0.0.1:${opts.port} (${(err as Error).message}); try --port 18830`);
    broker.close();
    return 1;
  }
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-demo-'));
  const config = loadConfig(path.join(projectRoot, 'config/demo.json'), {
    mqtt: { url: `mqtt://127.0.0.1:${opts.port}` },
    outbox: { path: path.join(state, 'outbox.sqlite') },
    service: { stateDir: state },
    // Loopback only: the console needs no credentials there (and refuses to start beyond it without).
    http: { enabled: opts.consolePort !== false, host: '127.0.0.1', port: opts.consolePort === false ? 0 : opts.consolePort },
  });
  for (const camera of config.cameras) camera.fps = opts.fps;
  const prefix = config.mqtt.topicPrefix;
  const log = createLogger('warn');
  const daemon = new Daemon({ config, log });
  const topic = `${prefix}/${config.device.id}`;
  console.log(`demo: broker on mqtt://127.0.0.1:${opts.port}; results under ${topic}/cam1/...`);
  console.log(`demo: watch with: mosquitto_sub -h 127.0.0.1 -p ${opts.port} -V mqttv311 -v -t '${topic}/#'`);

  const watcher = mqtt.connect(`mqtt://127.0.0.1:${opts.port}`, { protocolVersion: 4, clientId: `crad-demo-watch-${process.pid}` });
  let seen = 0;
  const finished = new Promise<void>((resolve) => {
    watcher.on('message', (t, payload) => {
      if (!t.endsWith('/result')) return;
      const r = JSON.parse(payload.toString('utf8')) as {
        camera: string; sequence: number; verdict: string | null; normalized: number | null; raw: number;
        regions: unknown[]; latencyMs: { total: number };
      };
      const score = r.normalized === null ? `raw ${r.raw.toFixed(3)}` : `score ${r.normalized.toFixed(3)}`;
      console.log(`${r.camera} #${String(r.sequence).padStart(4)}  ${(r.verdict ?? 'uncalibrated').padEnd(3)}  ${score}  regions ${r.regions.length}  ${r.latencyMs.total.toFixed(0)} ms`);
      if (opts.frames !== undefined && ++seen >= opts.frames) resolve();
    });
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await new Promise<void>((resolve) => watcher.subscribe(`${topic}/+/result`, { qos: 1 }, () => resolve()));
  try {
    await daemon.start();
  } catch (err) {
    console.error(`demo: ${(err as Error).message}`);
    watcher.end(true);
    server.close();
    broker.close();
    return 1;
  }
  if (daemon.consoleAddress) console.log(`demo: operator console on ${daemon.consoleAddress}/ (open it in a browser)`);
  await finished;
  await daemon.stop();
  watcher.end(true);
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  server.close();
  fs.rmSync(state, { recursive: true, force: true });
  return 0;
}

// What the Sparkplug plane costs the daemon per result, measured in one process where the
// machine's drift cannot tell the two sides apart: the real edge node (src/sparkplug) on a real
// broker, fed results one per event-loop turn as the pipeline hands them on, in blocks that
// alternate with the same loop without the plane. CPU is this process's (every thread, user +
// system, so the socket writes' kernel time counts); the broker's CPU is measured beside it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import type { Result } from '../../src/inference/types.js';
import { createLogger } from '../../src/shared/log.js';
import { createEdgeNode } from '../../src/sparkplug/index.js';
import { sampleProcess } from './proc.js';
import { median } from './stats.js';

export interface PlaneCost {
  /** Results per block and blocks per side. */
  block: number;
  rounds: number;
  /** Extra CPU of this process per result with the plane (median over rounds), ms. */
  cpuMsPerResult: number;
  /** The broker's CPU per result with the plane, less without (median), ms. */
  brokerCpuMsPerResult: number;
  /** Each round's extra CPU per result, ms. */
  roundsMs: number[];
  /** Results handed to the plane (warm-up included). */
  resultsSent: number;
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function sampleResult(sequence: number): Result {
  const ng = sequence % 4 === 0;
  return {
    frame: { cameraId: 'cam1', sequence, capturedAt: new Date().toISOString(), capturedMono: performance.now(), roi: null },
    model: null,
    raw: ng ? 12.5 + (sequence % 7) : 3.1 + (sequence % 5) / 10,
    normalized: ng ? 1.4 : 0.35,
    verdict: ng ? 'NG' : 'OK',
    calibrated: true,
    regions: ng ? [{ x: 10, y: 12, width: 30, height: 8, area: 180, peak: 14.2, peakNormalized: 1.6 }] : [],
    crops: [],
    overlay: null,
    latency: { queueMs: 0.3, preprocessMs: 2.1, inferenceMs: 25.6 + (sequence % 3), postprocessMs: 0.6, batchSize: 1 },
  };
}

/** The Sparkplug plane's CPU per result: `rounds` pairs of blocks of `block` results, with and without. */
export async function sparkplugCost(brokerUrl: string, brokerPid: number, rounds = 9, block = 1000): Promise<PlaneCost> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-bench-planes-'));
  const config = loadConfig(undefined, {
    device: { id: 'planes' },
    mqtt: { url: brokerUrl },
    sparkplug: { enabled: true, groupId: 'bench' },
    service: { stateDir: dir },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    cameras: [{ id: 'cam1', source: 'folder', path: dir }],
  });
  const node = createEdgeNode(config, { trigger: () => 'not in this benchmark', nodeInfo: () => ({ outboxDepth: 0, brokerReconnects: 0, configRevision: 1 }) }, createLogger('silent'))!;
  let sequence = 0;
  let resultsSent = 0;
  try {
    node.start();
    const deadline = Date.now() + 10_000;
    while (!node.stats().born) {
      if (Date.now() > deadline) throw new Error('the Sparkplug edge node was not born within 10 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    node.onCameraStatus({ cameraId: 'cam1', state: 'online', since: new Date().toISOString(), framesCaptured: 0, reconnects: 0 });
    const run = async (withPlane: boolean): Promise<{ cpu: number; broker: number }> => {
      const broker0 = brokerPid ? sampleProcess(brokerPid)?.cpuSeconds ?? 0 : 0;
      const t0 = cpuMs();
      for (let i = 0; i < block; i++) {
        const result = sampleResult(++sequence);
        if (withPlane) {
          node.onResult(result);
          resultsSent++;
        }
        await turn(); // MQTT.js writes on the next tick, as after a batch in the daemon
      }
      await turn();
      const cpu = cpuMs() - t0;
      const broker = brokerPid ? ((sampleProcess(brokerPid)?.cpuSeconds ?? 0) - broker0) * 1000 : 0;
      return { cpu, broker };
    };
    await run(true); // warm-up: JIT, socket buffers
    await run(false);
    const extra: number[] = [];
    const brokerExtra: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const first = round % 2 === 0;
      const a = await run(first);
      const b = await run(!first);
      const [withIt, without] = first ? [a, b] : [b, a];
      extra.push((withIt.cpu - without.cpu) / block);
      brokerExtra.push((withIt.broker - without.broker) / block);
    }
    return { block, rounds, cpuMsPerResult: median(extra), brokerCpuMsPerResult: median(brokerExtra), roundsMs: extra, resultsSent };
  } finally {
    await node.stop(2000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

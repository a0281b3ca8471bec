// The Sparkplug B 3.0 edge node: its own MQTT connection (one connection carries one Will, and the
// JSON plane's Will is its offline status), fed by the same results and camera statuses as the
// JSON plane. The state machine:
//   CONNECT (Will: NDEATH with the next bdSeq, QoS 1) -> subscribe NCMD, DCMD (and the primary
//   host's STATE) at QoS 1 -> [primary host online] -> NBIRTH (seq 0) -> DBIRTH per live camera ->
//   historical DDATA -> live NDATA/DDATA/DDEATH; Rebirth replays the births in the session, and so
//   does a camera coming online (payloads-dbirth-order: every DBIRTH right after the NBIRTH).
//   Host offline: NDEATH + DISCONNECT, then a new session that waits for the host again (on the
//   next server when several are configured: the walk, also after two failed CONNECTs).
// A clean stop sends NDEATH: MQTT 5 by DISCONNECT reason 0x04 (the broker publishes the Will),
// MQTT 3.1.1 by publishing it before the DISCONNECT. A session that ends is detached at once
// (client, born, subscribed cleared) so nothing of it follows its NDEATH.
// Delivery: Sparkplug DATA is QoS 0, so a result counts as delivered only once the broker answered
// a round trip (UNSUBSCRIBE of a topic never subscribed -> UNSUBACK) sent after its DDATA on the
// same connection: the broker reads a connection's packets in order. Until then a live result is
// kept in memory and a historical one stays in the history table; whatever a session's end leaves
// unconfirmed goes (back) to the table and is sent again, as historical DDATA, by the next one.
//
// The class is built in layers, one file each, bottom up: edge-node-base.ts (the state),
// edge-node-messages.ts (payloads), edge-node-replay.ts (history replay and round trips),
// edge-node-session.ts (sessions and the server walk), edge-node-host.ts (STATE and commands),
// and here what the rest of the daemon calls.
import type { CameraState, CameraStatus } from '../capture/frame.js';
import type { ModelInfo, Result } from '../inference/types.js';
import { resultValues, type MetricValue } from './metrics.js';
import { DEAD_STATES, DISCONNECT_WITH_WILL, FAULT_STATES, type EdgeNodeStats } from './edge-node-types.js';
import { EdgeNodeHost } from './edge-node-host.js';

export type { EdgeNodeHooks, EdgeNodeSettings, EdgeNodeStats } from './edge-node-types.js';

export class EdgeNode extends EdgeNodeHost {
  start(): void {
    this.openFiles();
    for (const id of this.settings.cameras) this.device(id);
    this.timer = setInterval(() => this.publishNodeData(), this.settings.ndataIntervalMs);
    this.timer.unref();
    this.connection.start();
  }

  stats(): EdgeNodeStats {
    return {
      connected: this.client !== null, born: this.born, bdSeq: this.bdSeq, sessions: this.counts.sessions, births: this.counts.births,
      rejectedCommands: this.counts.rejected, historyPending: this.history.size, historyDropped: this.history.dropped,
      historySent: this.counts.historySent, historyConfirmed: this.counts.historyConfirmed, liveUnconfirmed: this.unconfirmed.length,
      subscribeRefusals: this.counts.refusals, problem: this.problem,
    };
  }

  // ---- what the pipeline reports -------------------------------------------------------------

  onResult(result: Result): void {
    const device = this.device(result.frame.cameraId);
    const counters = this.countersOf(device.id);
    if (result.verdict === 'OK') counters.ok++;
    else if (result.verdict === 'NG') counters.ng++;
    const values: Record<string, MetricValue> = { ...resultValues(result), 'Counters/OK': counters.ok, 'Counters/NG': counters.ng };
    for (const [name, value] of Object.entries(values)) device.values.set(name, value);
    const capturedAt = Date.parse(result.frame.capturedAt);
    if (!this.born || !device.born || device.replayOnly) {
      this.history.append(device.id, capturedAt, values);
      return;
    }
    // Sent live (only what changed; nothing when nothing did): kept until a round trip confirms it.
    if (this.sendDeviceData(device, values, capturedAt)) {
      this.unconfirmed.push({ n: ++this.liveSent, cameraId: device.id, capturedAt, values });
      this.scheduleConfirm();
    }
  }

  onCameraStatus(status: CameraStatus): void {
    const device = this.device(status.cameraId);
    const previous = device.state;
    device.state = status.state;
    const counters = this.countersOf(device.id);
    if (FAULT_STATES.has(status.state) && !FAULT_STATES.has(previous as CameraState)) counters.errors++;
    const values = { 'Camera/State': status.state, 'Counters/Errors': counters.errors };
    for (const [name, value] of Object.entries(values)) device.values.set(name, value);
    if (!this.born) return;
    if (DEAD_STATES.has(status.state)) {
      if (device.born && !device.replayOnly) this.sendDeviceDeath(device);
    } else if (!device.born) {
      // payloads-dbirth-order: a DBIRTH only right after an NBIRTH, so a camera that comes online
      // during a session is a rebirth (same bdSeq) rather than a DBIRTH after other DATA.
      this.log.info({ camera: device.id }, 'Sparkplug: camera online, rebirth');
      this.birth();
    } else {
      device.replayOnly = false;
      this.sendDeviceData(device, values, Date.now());
    }
  }

  setModel(model: ModelInfo): void {
    this.nodeValues.set('Node Info/Model Name', model.name);
    this.nodeValues.set('Node Info/Model Hash', model.hash);
    this.nodeValues.set('Node Info/Model Variant', model.variant);
    this.nodeValues.set('Node Info/Execution Provider', model.executionProvider);
    this.nodeValues.set('Node Info/Model Input Form', model.input.form);
    this.publishNodeData();
  }

  /**
   * Clean stop: the live results confirmed if the broker answers soon (else kept in the history),
   * the session detached, NDEATH (see the file comment), DISCONNECT, history closed.
   */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.refusalTimer) clearTimeout(this.refusalTimer);
    if (this.walkTimer) clearTimeout(this.walkTimer);
    const deadline = Date.now() + timeoutMs;
    const client = this.client;
    const session = this.session;
    if (client && session && this.unconfirmed.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.confirmLive(session), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs / 4)))]);
      clearTimeout(timer);
    }
    this.endSession();
    if (client && this.version !== 5) await this.publishDeath(client, Math.max(50, (deadline - Date.now()) / 2));
    await this.connection.stop(Math.max(50, deadline - Date.now()), { reasonCode: DISCONNECT_WITH_WILL });
    this.closeHistory();
  }
}

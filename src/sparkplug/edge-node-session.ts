// The edge node's MQTT sessions: the CONNECT's Will, the subscriptions, the session's end, and the
// walk over several servers.
import type { MqttClient } from 'mqtt';
import { MqttConnection, type ProtocolVersion, type Will } from '../publish/connection.js';
import { backoffDelay } from '../shared/backoff.js';
import { redactUrls } from '../shared/redact.js';
import { WALK_AFTER_FAILURES, type Session } from './edge-node-types.js';
import { EdgeNodeReplay } from './edge-node-replay.js';

export abstract class EdgeNodeSession extends EdgeNodeReplay {
  /** A connection loop on one server; what an old one reports after the walk left it is ignored. */
  protected connectionTo(index: number): MqttConnection {
    const connection: MqttConnection = new MqttConnection(this.settings.connections[index]!, {
      will: (version) => this.will(version),
      onConnect: (client, _connack, version) => this.connection === connection && this.onConnect(client, version),
      onDisconnect: () => this.connection === connection && this.onDisconnect(),
      onMessage: (topic, payload) => this.connection === connection && this.onMessage(topic, payload),
    }, this.settings.connections.length > 1 ? this.log.child({ server: index }) : this.log);
    return connection;
  }

  /**
   * Multiple servers (operational-behavior-primary-application-state-with-multiple-servers-walk):
   * move to the next when the primary host goes offline on this one, or when this one failed
   * WALK_AFTER_FAILURES CONNECTs in a row. A whole round without a session backs off.
   */
  protected async walk(why: string): Promise<void> {
    if (this.walking || this.stopped || this.settings.connections.length < 2) return;
    this.walking = true;
    try {
      const old = this.connection;
      this.endSession();
      await old.stop(1000);
      if (this.stopped) return;
      this.serverIndex = (this.serverIndex + 1) % this.settings.connections.length;
      this.attemptsHere = 0;
      this.walks++;
      const rounds = Math.floor(this.walks / this.settings.connections.length);
      const delayMs = rounds > 0 ? backoffDelay(Math.min(rounds - 1, 30), this.server.reconnectMinMs, this.server.reconnectMaxMs) : 0;
      this.log.warn({ why, server: this.serverIndex, url: redactUrls(this.server.url), delayMs }, 'Sparkplug: moving to the next MQTT server');
      this.connection = this.connectionTo(this.serverIndex);
      this.walkTimer = setTimeout(() => {
        this.walkTimer = null;
        if (!this.stopped) this.connection.start();
      }, delayMs);
    } finally {
      this.walking = false;
    }
  }

  /** Each CONNECT carries the bdSeq one after the last CONNECT's (refused and timed-out ones too). */
  protected will(version: ProtocolVersion): Will {
    this.version = version;
    this.bdSeq = this.state.takeBdSeq();
    if (++this.attemptsHere > WALK_AFTER_FAILURES && this.settings.connections.length > 1) setImmediate(() => void this.walk('server unreachable'));
    return { topic: this.topics.node('NDEATH'), payload: this.deathPayload(), qos: 1, retain: false };
  }

  protected onConnect(client: MqttClient, version: ProtocolVersion): void {
    this.endSession();
    this.attemptsHere = 0;
    this.walks = 0;
    this.client = client;
    this.version = version;
    this.born = false;
    this.subscribed = false;
    this.hostOnline = false;
    this.counts.sessions++;
    let finish!: () => void;
    const end = new Promise<void>((resolve) => (finish = resolve));
    const session: Session = { client, ended: false, end, finish };
    this.session = session;
    const subscriptions: Record<string, { qos: 1 }> = { [this.topics.node('NCMD')]: { qos: 1 }, [this.topics.deviceCommands]: { qos: 1 } };
    if (this.stateTopic) subscriptions[this.stateTopic] = { qos: 1 };
    // A 2.2-era primary host announces itself on STATE/<id>: listened to, to say so (or to use it).
    if (this.stateTopic) subscriptions[this.legacyStateTopic] = { qos: 1 };
    client.subscribe(subscriptions, (err, granted) => {
      if (this.session !== session || session.ended) return;
      const refused = granted?.filter((g) => g.qos !== 1 && g.qos !== 2 && g.topic !== this.legacyStateTopic).map((g) => g.topic) ?? [];
      if (err || refused.length > 0) this.subscriptionsRefused(session, refused, err ?? undefined);
      else this.subscribed = true;
      if (!this.subscribed) return;
      this.refusalStreak = 0;
      this.problem = '';
      if (!this.stateTopic) this.birth();
      else if (this.hostOnline) this.birth();
      else this.log.info({ host: this.settings.primaryHostId }, 'Sparkplug: waiting for the primary host to be online');
    });
  }

  /**
   * Without its command topics (or the STATE) at QoS 1 the node cannot be told to rebirth: no
   * births on this session. Said (log, stats().problem) and retried with backoff, so a broker that
   * grants QoS 0 or an ACL that refuses a topic is not an endless silent reconnect loop.
   */
  protected subscriptionsRefused(session: Session, refused: string[], err: Error | undefined): void {
    this.counts.refusals++;
    const { reconnectMinMs, reconnectMaxMs } = this.server;
    const delayMs = backoffDelay(Math.min(this.refusalStreak++, 30), Math.max(1000, reconnectMinMs), Math.max(1000, reconnectMaxMs));
    this.problem = `the broker refused QoS 1 subscriptions${refused.length > 0 ? ` for ${refused.join(', ')}` : ''} (${err ? err.message : 'granted QoS 0'}): check its ACL and maximum QoS`;
    this.log.error({ err: err?.message, refused, refusals: this.counts.refusals, retryInMs: delayMs },
      'Sparkplug: the broker refused the node\'s subscriptions: no births on this session; reconnecting after a pause (check the broker\'s ACL and maximum QoS)');
    this.endSession();
    this.refusalTimer = setTimeout(() => {
      this.refusalTimer = null;
      session.client.end(false, {});
    }, delayMs);
  }

  protected onDisconnect(): void {
    this.endSession();
  }

  /**
   * The session is over (link lost, host offline, stop): detached at once so nothing more goes out
   * on it, its replay and round trips released, and the live results the broker did not confirm
   * kept in the history for the next session (some may have arrived: a duplicate, never a hole).
   */
  protected endSession(): void {
    this.born = false;
    this.subscribed = false;
    this.client = null;
    for (const device of this.devices.values()) device.born = false;
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmTimer = null;
    const session = this.session;
    if (!session || session.ended) return;
    session.ended = true;
    session.finish();
    if (this.unconfirmed.length > 0) {
      this.history.appendMany(this.unconfirmed);
      this.log.info({ results: this.unconfirmed.length }, 'Sparkplug: session ended with live results unconfirmed: kept for historical DDATA');
      this.unconfirmed = [];
    }
  }
}

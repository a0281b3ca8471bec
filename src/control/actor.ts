// Who sent a command, as far as it says: every command that changes something is audited with it.
import type { IPublishPacket } from 'mqtt';

/**
 * Who made a change:
 * - mqtt: a command's sender. MQTT 5 PUBLISH carries no sender id, so clientId is what the sender
 *   says: the user property "client-id" (clientIdFrom "user-property"), else a "clientId" field
 *   of the request (clientIdFrom "payload"), else absent. keyFingerprint names the Ed25519 key that
 *   signed the request, which is the only proof of origin.
 * - file: the operator's files (config file, a model file replaced on disk).
 * - console: a console user (username).
 * - daemon: the daemon itself (start-up checks, probation rollbacks).
 * - cli: a local command (`crad-edge validate`).
 */
export interface AuditActor {
  kind: 'mqtt' | 'file' | 'console' | 'daemon' | 'cli';
  clientId?: string;
  clientIdFrom?: 'user-property' | 'payload';
  keyFingerprint?: string;
  file?: string;
  username?: string;
}

/** The sender of an MQTT command as far as it says (see AuditActor). */
export function mqttActor(properties: IPublishPacket['properties'] | undefined, payload: Buffer | null, signedWith: string | null): AuditActor {
  const actor: AuditActor = { kind: 'mqtt' };
  const property = properties?.userProperties?.['client-id'];
  const fromProperty = Array.isArray(property) ? property[0] : property;
  if (typeof fromProperty === 'string' && fromProperty !== '') {
    actor.clientId = fromProperty.slice(0, 256);
    actor.clientIdFrom = 'user-property';
  } else {
    const fromPayload = payloadClientId(payload);
    if (fromPayload) {
      actor.clientId = fromPayload;
      actor.clientIdFrom = 'payload';
    }
  }
  if (signedWith) actor.keyFingerprint = signedWith;
  return actor;
}

function payloadClientId(payload: Buffer | null): string | null {
  if (!payload) return null;
  try {
    const clientId = (JSON.parse(payload.toString('utf8')) as { clientId?: unknown } | null)?.clientId;
    return typeof clientId === 'string' && clientId !== '' ? clientId.slice(0, 256) : null;
  } catch {
    return null;
  }
}

// Signed config pushes: the canonical bytes an Ed25519 signature covers, signing (for senders and
// tests) and verifying against remoteConfig.publicKey.
import crypto, { type KeyObject } from 'node:crypto';
import { isPlainObject, reject, type ConfigPushRequest } from './push-request.js';

/** An Ed25519 signature is 64 bytes: 86 base64 characters and "==" padding. */
const SIGNATURE_BASE64 = /^[A-Za-z0-9+/]{86}==$/;
/** Signed bytes start with this, so a signature made for something else never verifies here. */
export const SIGNING_CONTEXT = 'crad-edge/config-set/v1';

/**
 * Canonical JSON (RFC 8785 JCS for JSON-parsed values): object keys sorted by UTF-16 code units,
 * no whitespace, strings and numbers exactly as JSON.stringify writes them.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error('canonical JSON has no form for a non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isPlainObject(value)) {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  throw new Error(`canonical JSON has no form for a ${typeof value}`);
}

/**
 * The bytes an Ed25519 push signature covers: UTF-8 of
 *   "crad-edge/config-set/v1\n" + <device.id> + "\n" + canonicalJson(request without "signature").
 * The device id binds a signed push to one device (revisions repeat across devices); the
 * baseRevision makes it single-use on that device.
 */
export function configPushSigningBytes(request: Record<string, unknown>, deviceId: string): Buffer {
  const unsigned = Object.fromEntries(Object.entries(request).filter(([key]) => key !== 'signature'));
  return Buffer.from(`${SIGNING_CONTEXT}\n${deviceId}\n${canonicalJson(unsigned)}`, 'utf8');
}

/** Sign a push for one device with an Ed25519 private key (KeyObject or PEM); returns the request with its signature. */
export function signConfigPush(
  request: Omit<ConfigPushRequest, 'signature'>,
  privateKey: KeyObject | string,
  deviceId: string,
): ConfigPushRequest {
  const key = typeof privateKey === 'string' ? crypto.createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`config pushes are signed with Ed25519 keys, got ${key.asymmetricKeyType}`);
  const unsigned = { ...request } as Record<string, unknown>;
  delete unsigned.signature;
  const signature = crypto.sign(null, configPushSigningBytes(unsigned, deviceId), key).toString('base64');
  return { ...(unsigned as Omit<ConfigPushRequest, 'signature'>), signature };
}

/** remoteConfig.publicKey as a KeyObject: PEM, or base64 of the SPKI DER. */
export function parsePublicKey(text: string): KeyObject {
  const trimmed = text.trim();
  const key = trimmed.startsWith('-----BEGIN')
    ? crypto.createPublicKey(trimmed)
    : crypto.createPublicKey({ key: Buffer.from(trimmed, 'base64'), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

/** A signature, where one is sent, has the form the published schema gives it (also on a device that does not verify). */
export function checkSignatureForm(signature: unknown): asserts signature is string {
  if (typeof signature !== 'string' || !SIGNATURE_BASE64.test(signature)) {
    reject('signature must be the base64 of a 64-byte Ed25519 signature');
  }
}

export function checkSignature(request: Record<string, unknown>, publicKey: string, deviceId: string): void {
  let key: KeyObject;
  try {
    key = parsePublicKey(publicKey);
  } catch (err) {
    reject(`remoteConfig.publicKey on this device is not a usable Ed25519 public key (${(err as Error).message}); no push can be verified`);
  }
  if (!Object.hasOwn(request, 'signature')) reject('signature is missing: this device accepts only signed pushes (remoteConfig.publicKey is set)');
  const signature = request.signature;
  checkSignatureForm(signature);
  if (!crypto.verify(null, configPushSigningBytes(request, deviceId), key, Buffer.from(signature, 'base64'))) {
    reject('signature does not verify against remoteConfig.publicKey for this device and request');
  }
}

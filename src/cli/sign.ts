import fs from 'node:fs';
import { signConfigPush } from '../config/push-signing.js';

/** Print a config push request signed with an Ed25519 private key, bound to one device id. */
export function signCommand(requestFile: string, keyFile: string, deviceId: string): number {
  try {
    const request = JSON.parse(fs.readFileSync(requestFile, 'utf8')) as Record<string, unknown>;
    const key = fs.readFileSync(keyFile, 'utf8');
    process.stdout.write(`${JSON.stringify(signConfigPush(request as Parameters<typeof signConfigPush>[0], key, deviceId))}\n`);
    return 0;
  } catch (err) {
    console.error(`cannot sign ${requestFile}: ${(err as Error).message}`);
    return 1;
  }
}

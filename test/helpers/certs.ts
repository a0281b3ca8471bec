// Throw-away certificates for the TLS tests (broker, model server, console), made by the real
// openssl at test time in a temp dir that goes when the test process exits.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './cleanup.js';

export interface Certificates {
  dir: string;
  /** The CA certificate a client trusts (PEM). */
  ca: string;
  /** The server certificate (subjectAltName: the given IP addresses) and its key. */
  cert: string;
  key: string;
  /** Client certificates by common name, each with its key. */
  clients: Record<string, { cert: string; key: string }>;
}

/**
 * A CA, a server certificate for `ips` signed by it, and a client certificate per name in
 * `clients`. Keys are EC P-256 (quick to make). Everything is world-readable: mosquitto, started
 * as root, reads its files as its own user.
 */
export function makeCertificates(options: { ips?: string[]; clients?: string[] } = {}): Certificates {
  const dir = tempDir('certs');
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...newKey, '-days', '2', '-subj', '/CN=crad test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  const ips = options.ips ?? ['127.0.0.1'];
  fs.writeFileSync(f('server.ext'), `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(',')}\n`);
  const sign = (who: string, subject: string, ext?: string) => {
    openssl('req', ...newKey, '-subj', subject, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    openssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2',
      ...(ext ? ['-extfile', ext] : []), '-out', f(`${who}.pem`));
    return { cert: f(`${who}.pem`), key: f(`${who}.key`) };
  };
  const server = sign('server', `/CN=${ips[0]}`, f('server.ext'));
  const clients: Certificates['clients'] = {};
  for (const [i, name] of (options.clients ?? []).entries()) clients[name] = sign(`client${i}`, `/CN=${name}`);
  fs.chmodSync(dir, 0o755);
  for (const name of fs.readdirSync(dir)) fs.chmodSync(f(name), 0o644);
  return { dir, ca: f('ca.pem'), ...server, clients };
}

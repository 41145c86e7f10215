import { X509Certificate, createPrivateKey } from "node:crypto";
import { readPemFile, type SettingFile } from "./nats-auth.ts";

/**
 * TLS of the gRPC detector connection, from the AI_TLS_* variables (a node,
 * the gateway: the client side) and the DETECTOR_TLS_* variables (`camfleet
 * detector` and `camfleet up`: the server side). The files are read and
 * parsed once at start, with the same helpers as NATS_CA/NATS_CERT/NATS_KEY,
 * so a wrong path or a broken file is one line naming the variable and the
 * path. The handshake itself is grpc-js's (`credentials.createSsl`,
 * `ServerCredentials.createSsl`), fed with these PEM bytes by proto/.
 */

/** The PEM paths as set, for logs (the bytes never are). */
export interface TlsPaths {
  ca?: string;
  cert?: string;
  key?: string;
}

/** Client side: the CA the detector's certificate must chain to, and optionally a client certificate. */
export interface DetectorClientTlsConfig {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
  paths: TlsPaths;
}

/** Server side: the detector's certificate and key, and optionally the CA client certificates must be signed by. */
export interface DetectorServerTlsConfig {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  paths: TlsPaths;
}

type Read = (path: string) => Buffer;
const file = (path: string | undefined, from: string): SettingFile | undefined => (path !== undefined ? { path, from } : undefined);

/** AI_TLS_CA turns TLS on; AI_TLS_CERT and AI_TLS_KEY come together, and only with it. Undefined = cleartext. */
export function readDetectorClientTls(vars: { AI_TLS_CA?: string; AI_TLS_CERT?: string; AI_TLS_KEY?: string }, read: Read, problems: string[]): DetectorClientTlsConfig | undefined {
  const ca = file(vars.AI_TLS_CA, "AI_TLS_CA");
  const cert = file(vars.AI_TLS_CERT, "AI_TLS_CERT");
  const key = file(vars.AI_TLS_KEY, "AI_TLS_KEY");
  if (ca === undefined) {
    if (cert !== undefined || key !== undefined) {
      problems.push(`${(cert ?? key)!.from} is set without AI_TLS_CA; set AI_TLS_CA to the CA that signed the detector's certificate (it turns TLS on)`);
    }
    return undefined;
  }
  const before = problems.length;
  const caPem = readPemFile(ca, "certificate", read, problems);
  const pair = readPair(cert, key, "AI_TLS_CERT", "AI_TLS_KEY", read, problems);
  if (problems.length > before || caPem === undefined) return undefined;
  return { ca: caPem, ...pair, paths: pathsOf(ca, cert, key) };
}

/** DETECTOR_TLS_CERT and DETECTOR_TLS_KEY turn TLS on; DETECTOR_TLS_CA (only with them) requires client certificates. Undefined = cleartext. */
export function readDetectorServerTls(
  vars: { DETECTOR_TLS_CERT?: string; DETECTOR_TLS_KEY?: string; DETECTOR_TLS_CA?: string },
  read: Read,
  problems: string[],
): DetectorServerTlsConfig | undefined {
  const ca = file(vars.DETECTOR_TLS_CA, "DETECTOR_TLS_CA");
  const cert = file(vars.DETECTOR_TLS_CERT, "DETECTOR_TLS_CERT");
  const key = file(vars.DETECTOR_TLS_KEY, "DETECTOR_TLS_KEY");
  if (cert === undefined && key === undefined) {
    if (ca !== undefined) problems.push("DETECTOR_TLS_CA is set without DETECTOR_TLS_CERT and DETECTOR_TLS_KEY; client certificates are checked only over TLS");
    return undefined;
  }
  const before = problems.length;
  const pair = readPair(cert, key, "DETECTOR_TLS_CERT", "DETECTOR_TLS_KEY", read, problems);
  const caPem = ca !== undefined ? readPemFile(ca, "certificate", read, problems) : undefined;
  if (problems.length > before || pair.cert === undefined || pair.key === undefined) return undefined;
  return { cert: pair.cert, key: pair.key, ...(caPem !== undefined ? { ca: caPem } : {}), paths: pathsOf(ca, cert, key) };
}

/** A certificate and its key: both or neither, each a PEM, and the key must be the certificate's (else the handshake fails with no hint why). */
function readPair(cert: SettingFile | undefined, key: SettingFile | undefined, certVar: string, keyVar: string, read: Read, problems: string[]): { cert?: Buffer; key?: Buffer } {
  if (cert === undefined && key === undefined) return {};
  if (cert === undefined || key === undefined) {
    problems.push(cert === undefined ? `${keyVar} is set without ${certVar}; a certificate needs both` : `${certVar} is set without its private key (${keyVar}); a certificate needs both`);
    return {};
  }
  const certPem = readPemFile(cert, "certificate", read, problems);
  const keyPem = readPemFile(key, "private key", read, problems);
  if (certPem === undefined || keyPem === undefined) return {};
  if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) {
    problems.push(`${keyVar} names ${JSON.stringify(key.path)}, which is not the private key of ${certVar} (${JSON.stringify(cert.path)})`);
    return {};
  }
  return { cert: certPem, key: keyPem };
}

function pathsOf(ca: SettingFile | undefined, cert: SettingFile | undefined, key: SettingFile | undefined): TlsPaths {
  return { ...(ca ? { ca: ca.path } : {}), ...(cert ? { cert: cert.path } : {}), ...(key ? { key: key.path } : {}) };
}

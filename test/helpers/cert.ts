/**
 * Test helper: a self-signed certificate made at test time with the openssl
 * command line (Node cannot issue X.509 certificates by itself), for wss://
 * servers on 127.0.0.1. The certificate is its own CA: pass `cert` as `ca`.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A key pair and self-signed certificate, PEM encoded. */
export interface TestCert {
  key: string;
  cert: string;
}

/** The names the certificate is valid for. */
export const CERT_NAMES = ["localhost", "ws.test", "127.0.0.1"];

/**
 * makeCert generates a P-256 key and a self-signed certificate valid for a
 * day for localhost, ws.test and 127.0.0.1. Throws if openssl fails.
 */
export function makeCert(commonName = "localhost"): TestCert {
  const dir = mkdtempSync(join(tmpdir(), "wsconn-cert-"));
  try {
    const keyFile = join(dir, "key.pem");
    const certFile = join(dir, "cert.pem");
    const san = "subjectAltName=DNS:localhost,DNS:ws.test,IP:127.0.0.1";
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", `/CN=${commonName}`, "-addext", san],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    return { key: readFileSync(keyFile, "utf8"), cert: readFileSync(certFile, "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

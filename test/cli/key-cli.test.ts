import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import {
  formatPublicKey,
  parsePublicKey,
  parseSecretKey,
  signFingerprint,
  verifySignature,
} from '../../src/core/signature.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

beforeAll(() => ensureBuilt(), 120_000);

describe('strata key generate NAME SECRET PUBLIC', () => {
  it('writes the two files as nix-store --generate-binary-cache-key does', async () => {
    const dir = tempDir();
    const [sk, pk] = [join(dir, 'cache.sec'), join(dir, 'cache.pub')];
    const r = await runStrata(['key', 'generate', 'cache.example.org-1', sk, pk]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(0);
    const secretText = readFileSync(sk, 'utf8');
    const publicText = readFileSync(pk, 'utf8');
    expect(secretText).toMatch(/^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
    expect(publicText).toMatch(/^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/);
    expect(statSync(sk).mode & 0o777).toBe(0o600);
    // The public file follows the umask (0666 & ~umask), as Nix's writeFile does; the child inherits ours.
    expect(statSync(pk).mode & 0o777).toBe(0o666 & ~process.umask());
    const secret = parseSecretKey(secretText);
    expect(formatPublicKey(secret.publicKey)).toBe(publicText);
    expect(verifySignature('fp', signFingerprint('fp', secret), [parsePublicKey(publicText)])).toBe(
      true,
    );
  });

  it('--json shows the public key and file names, never the secret key', async () => {
    const dir = tempDir();
    const r = await runStrata(['--json', 'key', 'generate', 'k-1', join(dir, 's'), join(dir, 'p')]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout.toString()) as Record<string, string>;
    expect(out['publicKey']).toBe(readFileSync(join(dir, 'p'), 'utf8'));
    expect(out['secretKeyFile']).toBe(join(dir, 's'));
    const secretB64 = readFileSync(join(dir, 's'), 'utf8').split(':')[1]!;
    expect(r.stdout.toString()).not.toContain(secretB64.slice(0, 20));
  });

  it('refuses to overwrite an existing secret or public file, and leaves nothing behind', async () => {
    const dir = tempDir();
    const [sk, pk] = [join(dir, 's'), join(dir, 'p')];
    writeFileSync(sk, 'precious');
    let r = await runStrata(['key', 'generate', 'k-1', sk, pk]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `error: Cannot write key file '${sk}': it already exists\nhint: remove it first, or choose another file name\n`,
    );
    expect(readFileSync(sk, 'utf8')).toBe('precious');
    expect(existsSync(pk)).toBe(false);

    const sk2 = join(dir, 's2');
    writeFileSync(pk, 'also precious');
    r = await runStrata(['key', 'generate', 'k-1', sk2, pk]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Cannot write key file '${pk}': it already exists`);
    expect(readFileSync(pk, 'utf8')).toBe('also precious');
    expect(existsSync(sk2)).toBe(false);

    r = await runStrata(['key', 'generate', 'k-1', sk2, sk2]);
    expect(r.code).toBe(1);
    expect(existsSync(sk2)).toBe(false);
  });

  it('rejects a bad key name and missing arguments', async () => {
    const dir = tempDir();
    let r = await runStrata(['key', 'generate', 'bad name', join(dir, 's'), join(dir, 'p')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: Cannot use key name 'bad name': /);
    expect(existsSync(join(dir, 's'))).toBe(false);
    r = await runStrata(['key', 'generate', 'k-1', join(dir, 's')]);
    expect(r.code).toBe(2);
    expect(existsSync(join(dir, 's'))).toBe(false);
  });

  it('real Nix derives the same public key from the secret file (nix key convert-secret-to-public)', async () => {
    expect(haveNix(), 'real Nix (nix-bin) must be installed').toBe(true);
    const dir = tempDir();
    const r = await runStrata(['key', 'generate', 'strata-cli-1', join(dir, 's'), join(dir, 'p')]);
    expect(r.code).toBe(0);
    const nix = runNix('nix', ['key', 'convert-secret-to-public'], {
      input: readFileSync(join(dir, 's')),
    });
    expect(nix.code, nix.stderr).toBe(0);
    expect(nix.stdout).toBe(readFileSync(join(dir, 'p'), 'utf8'));
  });
});

/**
 * Signatures and trust (issue 8 §6): with require-sigs on (the default), nothing unsigned or
 * signed by an untrusted key becomes valid, whether it arrives through `strata copy` or through
 * a layered store's binary-cache lower; content-addressed paths verify by content (a true CA
 * claim needs no signature, a false one is refused).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { Hash, nix32Encode } from '../../src/core/hash.js';
import { formatPublicKey, formatSecretKey, generateKeyPair } from '../../src/core/signature.js';
import { StoreDir } from '../../src/core/store-path.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { hashTree, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { tempDir } from '../support/tmp.js';
import { makeSource, validSet } from './_crash.js';
import { record, rng, SEED, TIMEOUT } from './_torture.js';

const dir = new StoreDir();

describe('torture: signatures and trust', { timeout: TIMEOUT }, () => {
  it('require-sigs: unsigned, untrusted and falsely content-addressed paths never become valid through copy or a layered cache lower', async () => {
    ensureBuilt();
    const work = tempDir();
    // Source store: an input-addressed path (needs a signature) and a text path (CA, verifies by content).
    const src = join(work, 'src');
    const s = (await openStore(src)) as LocalStore;
    let ia: string;
    let ca: string;
    try {
      const source = await makeSource(join(work, 'tree'), 'tree', rng(SEED), 0);
      const path = dir.parse(
        `/nix/store/${nix32Encode(Hash.of('sha256', String(SEED)).bytes.subarray(0, 20))}-signed-thing`,
      );
      await s.addFromNar(
        {
          path,
          narHash: source.narHash,
          narSize: source.narSize,
          references: [],
          ultimate: false,
          sigs: [],
        },
        dumpPath(source.dir) as Readable,
      );
      ia = dir.print(path);
      ca = dir.print((await s.addText('by-content', 'verifies by content\n', [])).path);
    } finally {
      await s.close();
    }
    const keyA = generateKeyPair('trusted-1');
    const keyB = generateKeyPair('stranger-1');
    writeFileSync(join(work, 'a.sec'), formatSecretKey(keyA.secretKey));
    writeFileSync(join(work, 'b.sec'), formatSecretKey(keyB.secretKey));
    const trusted = formatPublicKey(keyA.publicKey);
    const caches = {
      unsigned: join(work, 'c-unsigned'),
      a: join(work, 'c-a'),
      b: join(work, 'c-b'),
    };
    for (const [c, key] of [
      [caches.unsigned, ''],
      [caches.a, `&secret-key=${join(work, 'a.sec')}`],
      [caches.b, `&secret-key=${join(work, 'b.sec')}`],
    ] as const) {
      const r = await runStrata([
        'copy',
        '--from',
        src,
        '--to',
        `file://${c}?compression=none${key}`,
        ia,
        ca,
      ]);
      expect(r.code, r.stderr).toBe(0);
    }
    // A false CA claim on the input-addressed path, in a copy of the unsigned cache.
    const liar = join(work, 'c-liar');
    await runStrata(['copy', '--from', src, '--to', `file://${liar}?compression=none`, ia]);
    const niFile = readdirSync(liar).find((f) => f.endsWith('.narinfo'))!;
    writeFileSync(
      join(liar, niFile),
      `${readFileSync(join(liar, niFile), 'utf8')}CA: fixed:r:sha256:${nix32Encode(Hash.of('sha256', 'lie').bytes)}\n`,
    );

    let refused = 0;
    const refuse = async (from: string, path: string, why: string): Promise<void> => {
      const dest = join(work, `dest-${refused}`);
      const r = await runStrata([
        '--trusted-public-keys',
        trusted,
        'copy',
        '--from',
        `file://${from}`,
        '--to',
        dest,
        path,
      ]);
      expect(r.code, `${why}: ${r.stderr}`).toBe(1);
      // One error line (the CLI may add its 'hint:' line, which says what to do).
      expect(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => !l.startsWith('hint: ')),
        why,
      ).toHaveLength(1);
      try {
        expect(validSet(dest).size, why).toBe(0);
      } catch (e) {
        if (!String(e).includes('unable to open') && !String(e).includes('SQLITE_CANTOPEN'))
          throw e;
      }
      refused++;
    };
    await refuse(caches.unsigned, ia, 'unsigned');
    await refuse(caches.b, ia, 'signed by an untrusted key');
    await refuse(liar, ia, 'a false CA claim');
    // Trusted signature: accepted. CA path without a signature: accepted, by content.
    const ok = join(work, 'dest-ok');
    for (const [from, path] of [
      [caches.a, ia],
      [caches.unsigned, ca],
    ] as const) {
      const r = await runStrata([
        '--trusted-public-keys',
        trusted,
        'copy',
        '--from',
        `file://${from}`,
        '--to',
        ok,
        path,
      ]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect(validSet(ok)).toEqual(new Set([ia.slice(11), ca.slice(11)]));

    // Through a layered store whose lower is the unsigned / untrusted cache: never valid.
    if (isRoot) {
      for (const c of [caches.unsigned, caches.b, liar]) {
        const lower = await makeLower(join(work, `lower-${refused}`));
        const before = hashTree(lower.root);
        const root = join(work, `layered-${refused}`);
        await (
          await initLayered(root, [lower.root, `file://${c}`], { trustedPublicKeys: [trusted] })
        ).close();
        const r = await runStrata(['--store', `layered://${root}`, 'path-info', ia]);
        const store = await openStore(`layered://${root}`);
        try {
          const valid = await store.isValidPath(dir.parse(ia)).catch(() => false);
          expect(valid, `layered over ${c}: ${r.stderr}`).toBe(false);
        } finally {
          await store.close();
        }
        expect(validSet(root).has(ia.slice(11))).toBe(false);
        expect(hashTree(lower.root)).toBe(before);
        refused++;
      }
    }
    record('signatures and trust', { trials: refused + 2 });
  });
});

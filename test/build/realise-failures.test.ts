/**
 * Builds that must fail: each gives one clear error line and leaves the store as it was (no new
 * valid path, no output or scratch left behind).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { BuildFailure, realise, realiseOrThrow } from '../../src/build/index.js';
import { isStrataError } from '../../src/core/error.js';
import { Hash } from '../../src/core/hash.js';
import type { StorePath } from '../../src/core/store-path.js';
import type { LocalFsStore } from '../../src/store/store.js';
import { ROOT, ensureBuilt, runStrata } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { addDerivation } from '../../src/store/derivation-add.js';
import { addShDrv, openChroot, shDrv, snapshot, twoDeps } from './helpers.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('realise: failing builds', () => {
  let root: string;
  let store: LocalFsStore;
  beforeEach(async () => {
    root = tempDir();
    store = await openChroot(root);
  });
  afterEach(async () => {
    await store.close();
  });

  /** Realises `drv` and returns the error, checking nothing in the store changed. */
  async function failOf(drv: StorePath): Promise<Error> {
    const before = await snapshot(store);
    const [r] = await realise(store, [drv]);
    expect(r!.outputs).toBeUndefined();
    expect(await snapshot(store)).toEqual(before);
    for (const o of (await store.queryDerivationOutputs(drv)).values())
      expect(existsSync(store.realPath(o))).toBe(false);
    return r!.error!;
  }

  it('a failing builder gives BUILD_FAILED with its exit code, the last 10 log lines and the log path', async () => {
    const drv = await addShDrv(
      store,
      'fails',
      'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i; done; echo partial > $out; echo oops >&2; exit 3',
    );
    const e = await failOf(drv);
    expect(e).toBeInstanceOf(BuildFailure);
    const f = e as BuildFailure;
    expect(f.code).toBe('BUILD_FAILED');
    expect(f.message).toBe(
      `Cannot build '/nix/store/${drv.baseName}': builder failed with exit code 3`,
    );
    expect(f.logTail).toEqual([
      'line4',
      'line5',
      'line6',
      'line7',
      'line8',
      'line9',
      'line10',
      'line11',
      'line12',
      'oops',
    ]);
    expect(f.logPath).toBe(
      join(root, 'nix/var/log/nix/drvs', drv.baseName.slice(0, 2), `${drv.baseName.slice(2)}.bz2`),
    );
    expect(existsSync(f.logPath)).toBe(true);
  });

  it('a builder writing outside $out gives BUILD_WROTE_OUTSIDE and the file never reaches the store', async () => {
    const drv = await addShDrv(
      store,
      'escapes',
      'echo ok > $out; echo evil > /nix/store/evil-file',
    );
    const e = await failOf(drv);
    expect(isStrataError(e, 'BUILD_WROTE_OUTSIDE')).toBe(true);
    expect(e.message).toMatch(/the builder wrote '\/nix\/store\/evil-file' outside its outputs$/);
    expect(existsSync(join(store.realStoreDir, 'evil-file'))).toBe(false);
  });

  it('a builder deleting or changing an existing store object is refused and the object is intact', async () => {
    const victim = await store.addText('victim', 'keep me', []);
    const drv = await addShDrv(
      store,
      'vandal',
      `echo ok > $out; /bin/rm -f /nix/store/${victim.path.baseName}`,
    );
    const e = await failOf(drv);
    expect(isStrataError(e, 'BUILD_WROTE_OUTSIDE')).toBe(true);
    expect(e.message).toContain(`deleted '/nix/store/${victim.path.baseName}'`);
    expect(existsSync(store.realPath(victim.path))).toBe(true);
  });

  it('a builder that produces no output gives OUTPUT_MISSING', async () => {
    const drv = await addShDrv(store, 'lazy', 'echo did nothing');
    const e = await failOf(drv);
    expect(isStrataError(e, 'OUTPUT_MISSING')).toBe(true);
    expect(e.message).toMatch(
      /the builder failed to produce output path '\/nix\/store\/[a-z0-9]{32}-lazy'$/,
    );
  });

  it('a multi-output builder that skips one output registers none of them', async () => {
    const drv = await addShDrv(store, 'half', 'echo a > $out', { outputs: ['out', 'dev'] });
    const e = await failOf(drv);
    expect(isStrataError(e, 'OUTPUT_MISSING')).toBe(true);
    expect(e.message).toContain('-half-dev');
  });

  it('a fixed-output hash mismatch gives HASH_MISMATCH with the specified and the got hash', async () => {
    const want = Hash.of('sha256', 'expected\n');
    const got = Hash.of('sha256', 'actual\n');
    const drv = await addShDrv(store, 'fod-bad', "printf 'actual\\n' > $out", {
      fixed: { hashAlgo: 'sha256', hash: want.toBase16() },
    });
    const e = await failOf(drv);
    expect(isStrataError(e, 'HASH_MISMATCH')).toBe(true);
    expect(e.message).toContain(
      `specified ${want.toSri()} (${want.toString('nix32')}), got ${got.toSri()} (${got.toString('nix32')})`,
    );
  });

  // Real Nix 2.8 refuses each of these with "output '…' is not allowed to refer to the
  // following paths: …dep" and registers nothing.
  it.each([
    ['allowedReferences', 'echo $dep > $out', (_dep: string, dep2: string) => dep2],
    ['allowedRequisites', 'echo $dep2 > $out', (_dep: string, dep2: string) => `${dep2} out`],
    ['disallowedReferences', 'echo $dep > $out', (dep: string) => dep],
    ['disallowedRequisites', 'echo $dep2 > $out', (dep: string) => dep],
  ])('an output breaking %s gives REFERENCE_NOT_ALLOWED naming the path', async (attr, script, spec) => {
    const { dep, dep2, inputDrvs } = await twoDeps(store);
    const drv = await addShDrv(store, 'restricted', script, {
      inputDrvs,
      env: { dep, dep2, [attr]: spec(dep, dep2) },
    });
    const e = await failOf(drv);
    expect(isStrataError(e, 'REFERENCE_NOT_ALLOWED'), String(e)).toBe(true);
    expect(e.message).toMatch(
      new RegExp(`-restricted': it is not allowed to refer to '${dep}' \\(${attr}\\)$`),
    );
  });

  it('outputs within their allowed references and requisites (self and sibling outputs by name) are registered', async () => {
    const { dep, dep2, inputDrvs } = await twoDeps(store);
    const drv = await addShDrv(store, 'within', 'echo $dep2 $out $dev > $out; echo x > $dev', {
      inputDrvs,
      outputs: ['out', 'dev'],
      env: {
        dep2,
        allowedReferences: `${dep2} out dev`,
        // The output itself need not be listed: Nix ignores self-references here.
        allowedRequisites: `${dep2} ${dep} dev`,
        disallowedReferences: dep,
        disallowedRequisites: '',
      },
    });
    const [outs] = await realiseOrThrow(store, [drv]);
    expect(await store.isValidPath(outs!.get('out')!)).toBe(true);
  });

  it('a restriction naming neither a store path nor an output is refused', async () => {
    const drv = await addShDrv(store, 'badspec', 'echo > $out', {
      env: { allowedReferences: 'nonsense' },
    });
    const e = await failOf(drv);
    expect(isStrataError(e, 'DRV_INVALID'), String(e)).toBe(true);
    expect(e.message).toContain("'allowedReferences' holds 'nonsense'");
  });

  // Real Nix 2.8 on this x86_64 machine: "a 'aarch64-linux' with features {} is required to
  // build '…', but I am a 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}".
  it('a derivation for another system, or needing a feature this machine lacks, is not built', async () => {
    const arm = shDrv('arm', 'echo > $out');
    arm.system = 'aarch64-linux';
    arm.env.set('system', 'aarch64-linux');
    const e = await failOf(await addDerivation(store, arm));
    expect(isStrataError(e, 'SYSTEM_UNSUPPORTED'), String(e)).toBe(true);
    expect(e.message).toMatch(
      /it needs a 'aarch64-linux' with features \{\}, but this machine is a 'x86_64-linux' with features \{benchmark, big-parallel, nixos-test(, kvm)?\}$/,
    );
    const feat = await addShDrv(store, 'feat', 'echo > $out', {
      env: { requiredSystemFeatures: 'big-parallel kvm-nope' },
    });
    const e2 = await failOf(feat);
    expect(isStrataError(e2, 'SYSTEM_UNSUPPORTED'), String(e2)).toBe(true);
    expect(e2.message).toContain("needs a 'x86_64-linux' with features {big-parallel, kvm-nope}");
    // What Nix does build here: an i686 derivation (extra-platforms) and a feature it has.
    const i686 = shDrv('i686', 'echo > $out', { env: { requiredSystemFeatures: 'big-parallel' } });
    i686.system = 'i686-linux';
    i686.env.set('system', 'i686-linux');
    await realiseOrThrow(store, [await addDerivation(store, i686)]);
  });

  it('a flat fixed output that is a directory is refused', async () => {
    const drv = await addShDrv(store, 'fod-dir', '/bin/mkdir $out', {
      fixed: { hashAlgo: 'sha256', hash: Hash.of('sha256', '').toBase16() },
    });
    const e = await failOf(drv);
    expect(isStrataError(e, 'OUTPUT_INVALID')).toBe(true);
    expect(e.message).toContain('should be a non-executable regular file');
  });

  // Real Nix 2.8: "suspicious ownership or permission on '…' for output 'out'; rejecting this
  // build output" (it checks the output itself, not what is inside).
  it('a group- or world-writable output is refused', async () => {
    const drv = await addShDrv(store, 'writable', '/bin/mkdir $out; echo > $out/f; /bin/chmod 1777 $out');
    const e = await failOf(drv);
    expect(isStrataError(e, 'OUTPUT_INVALID'), String(e)).toBe(true);
    expect(e.message).toMatch(/-writable': it is group- or world-writable \(mode 1777\)/);
    const file = await addShDrv(store, 'writable-file', 'echo > $out; /bin/chmod 664 $out');
    expect(isStrataError(await failOf(file), 'OUTPUT_INVALID')).toBe(true);
    // Inside the output, modes are only canonicalised, as in Nix.
    const inner = await addShDrv(store, 'inner', '/bin/mkdir $out; echo > $out/f; /bin/chmod 4777 $out/f');
    const [outs] = await realiseOrThrow(store, [inner]);
    const { statSync } = await import('node:fs');
    expect(statSync(`${store.realPath(outs!.get('out')!)}/f`).mode & 0o7777).toBe(0o555);
  });

  it('an output holding a FIFO is refused', async () => {
    const drv = await addShDrv(store, 'fifo', '/bin/mkdir $out; /usr/bin/mkfifo $out/pipe');
    const e = await failOf(drv);
    expect(isStrataError(e, 'OUTPUT_INVALID')).toBe(true);
    expect(e.message).toMatch(/-fifo\/pipe' is a FIFO, not a regular file, directory or symlink$/);
  });

  it('a failed input stops its dependents; --keep-going still builds the independent ones', async () => {
    const bad = await addShDrv(store, 'bad', 'exit 1');
    const dep = await addShDrv(store, 'needs-bad', 'echo > $out', {
      inputDrvs: new Map([[bad.baseName, ['out']]]),
    });
    const ok = await addShDrv(store, 'fine', '/bin/sleep 0.3; echo fine > $out');
    const results = await realise(store, [dep, ok], { keepGoing: true, jobs: 1 });
    expect(results[0]!.error).toBeDefined();
    expect(results[1]!.outputs?.get('out')).toBeDefined();
    expect(await store.isValidPath(results[1]!.outputs!.get('out')!)).toBe(true);
  });

  it('rebuilding a derivation whose other output is still valid registers only the missing one', async () => {
    const side = join(tempDir(), 'runs');
    const drv = await addShDrv(store, 'pair', `echo run >> ${side}; echo o > $out; echo d > $dev`, {
      outputs: ['out', 'dev'],
    });
    const [first] = await realise(store, [drv]);
    const out = first!.outputs!.get('out')!;
    const dev = first!.outputs!.get('dev')!;
    const devInfo = (await store.queryPathInfo(dev))!;
    // Our temp roots keep `out` alive while this store is open.
    await store.close();
    store = await openChroot(root);
    await store.deletePaths([out]);
    expect(await store.isValidPath(out)).toBe(false);
    // The builder gets an empty $dev (a whiteout hides the valid one) and only `out` is registered.
    const [second] = await realise(store, [drv]);
    expect(second!.error).toBeUndefined();
    expect(await store.isValidPath(out)).toBe(true);
    expect((await store.queryPathInfo(dev))!.registrationTime).toBe(devInfo.registrationTime);
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(side, 'utf8')).toBe('run\nrun\n');
    expect(readFileSync(store.realPath(out), 'utf8')).toBe('o\n');
    expect((await snapshot(store)).scratch).toEqual([]);
  });

  it('`strata realise` prints the log tail and one error line, and exits 1', async () => {
    ensureBuilt();
    const drv = await addShDrv(store, 'cli-fails', 'echo first; echo second >&2; exit 7');
    await store.close();
    const r = await runStrata(['--store', root, 'realise', `/nix/store/${drv.baseName}`]);
    store = await openChroot(root);
    expect(r.code).toBe(1);
    expect(r.stdout.toString()).toBe('');
    expect(r.stderr).toContain('> first\n> second\n');
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
    expect(errors).toEqual([
      `error: Cannot build '/nix/store/${drv.baseName}': builder failed with exit code 7`,
    ]);
    expect(r.stderr).toMatch(/hint: the full log is in '.*\.bz2'/);
  });

  it('an interrupted `strata realise` kills its builder and leaves no build dir, scratch or output behind', async () => {
    ensureBuilt();
    const tmp = tempDir();
    const marker = join(tempDir(), 'still-running');
    const drv = await addShDrv(
      store,
      'slow',
      `/bin/mkdir $out; echo partial > $out/x; /bin/sleep 5; echo > ${marker}`,
    );
    const before = await snapshot(store);
    await store.close();
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'strata'), '--store', root, 'realise', store.storeDir.print(drv)], {
      env: { ...process.env, TMPDIR: tmp },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.includes('building ')) setTimeout(() => child.kill('SIGINT'), 300);
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(1);
    expect(stderr).toContain('error: Cannot realise: interrupted by SIGINT');
    expect(readdirSync(tmp)).toEqual([]);
    store = await openChroot(root);
    expect(await snapshot(store)).toEqual(before);
    await new Promise((r) => setTimeout(r, 5500));
    expect(existsSync(marker)).toBe(false); // The builder died with the run.
  });
});

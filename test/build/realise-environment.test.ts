/**
 * The builder sees exactly Nix's environment (formats.md §1), runs in its build dir with umask
 * 0022 and stdin from /dev/null, and its output goes to a bzip2 log that real Nix reads.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { buildLogPath, realise, realiseOrThrow } from '../../src/build/index.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { addShDrv, openChroot, twoDeps } from './helpers.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('realise: builder environment', () => {
  it('gives the builder Nix 2.8 variables, cwd, umask and stdin, and logs its output', async () => {
    const root = tempDir();
    const store = await openChroot(root);
    try {
      const script = [
        '/usr/bin/env -0 > $out',
        'printf "\\0umask=%s\\0cwd=%s\\0stdin=%s\\0" "$(umask)" "$(/bin/pwd)" "$(/usr/bin/readlink /proc/self/fd/0)" >> $out',
        '/bin/cat "$passedPath" >> $out',
        'echo to-stdout; echo to-stderr >&2',
      ].join('; ');
      const drv = await addShDrv(store, 'env-probe', script, {
        env: { foo: 'bar', passAsFile: 'passed', passed: 'PASSED-CONTENT' },
      });
      const [outs] = await realiseOrThrow(store, [drv], { cores: 3 });
      const out = outs!.get('out')!;
      const text = readFileSync(store.realPath(out), 'utf8');
      const vars = text.split('\0').filter((l) => l !== '');
      const env = Object.fromEntries(
        vars
          .filter((l) => /^[A-Za-z_]+=/.test(l))
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      const top = env['NIX_BUILD_TOP']!;
      expect(top).toMatch(/\/nix-build-env-probe\.drv-0$/);
      // The name real Nix 2.8 gives it (nix-build of the same passAsFile derivation printed it).
      const passedPath = `${top}/.attr-04zb2dwbwvdshsmqmhanm0giw00cjjxjnr0pvwrq490q9661wk98`;
      expect(env).toEqual({
        HOME: '/homeless-shelter',
        NIX_BUILD_CORES: '3',
        NIX_BUILD_TOP: top,
        NIX_LOG_FD: '2',
        NIX_STORE: '/nix/store',
        PATH: '/path-not-set',
        PWD: top,
        TEMP: top,
        TEMPDIR: top,
        TERM: 'xterm-256color',
        TMP: top,
        TMPDIR: top,
        builder: '/bin/sh',
        foo: 'bar',
        name: 'env-probe',
        out: store.storeDir.print(out),
        passAsFile: 'passed',
        passedPath,
        system: 'x86_64-linux',
        umask: '0022',
        cwd: top,
        stdin: '/dev/null',
      });
      expect(text.endsWith('PASSED-CONTENT')).toBe(true);
      // The log: bzip2 of stdout and stderr in one stream, where Nix looks for it.
      const logPath = buildLogPath(store.logDir, drv);
      expect(execFileSync('bzip2', ['-dc', logPath]).toString()).toBe('to-stdout\nto-stderr\n');
      if (haveNix()) {
        const l = runNix('nix-store', ['--store', root, '-l', store.storeDir.print(drv)]);
        expect(l.stdout).toBe('to-stdout\nto-stderr\n');
      }
    } finally {
      await store.close();
    }
  });

  it('a fixed-output builder also gets NIX_OUTPUT_CHECKED=1 and its impureEnvVars; passAsFile files are 0644', async () => {
    // Seen with real Nix 2.8 (sandbox off): `NIX_OUTPUT_CHECKED=1` for fixed-output builds only,
    // each impureEnvVars name with the host's value or empty, `.attr-*` files mode 0644.
    const root = tempDir();
    const store = await openChroot(root);
    const old = process.env['STRATA_TEST_PROXY'];
    process.env['STRATA_TEST_PROXY'] = 'http://proxy:3128';
    try {
      const drv = await addShDrv(
        store,
        'fod-env',
        '/usr/bin/env; /usr/bin/stat -c "mode=%a" "$pPath"; printf hello > $out',
        {
          env: {
            impureEnvVars: 'STRATA_TEST_PROXY STRATA_TEST_UNSET',
            passAsFile: 'p',
            p: 'x',
          },
          fixed: {
            hashAlgo: 'sha256',
            hash: '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824',
          },
        },
      );
      await realiseOrThrow(store, [drv]);
      const log = execFileSync('bzip2', ['-dc', buildLogPath(store.logDir, drv)]).toString();
      const lines = log.split('\n');
      expect(lines).toContain('NIX_OUTPUT_CHECKED=1');
      expect(lines).toContain('STRATA_TEST_PROXY=http://proxy:3128');
      expect(lines).toContain('STRATA_TEST_UNSET=');
      expect(lines).toContain('mode=644');
    } finally {
      if (old === undefined) delete process.env['STRATA_TEST_PROXY'];
      else process.env['STRATA_TEST_PROXY'] = old;
      await store.close();
    }
  });

  it('exportReferencesGraph writes each closure into the build dir as Nix 2.8 does', async () => {
    const root = tempDir();
    const store = await openChroot(root);
    try {
      const { dep, dep2, inputDrvs } = await twoDeps(store);
      const drv = await addShDrv(store, 'erg', '/bin/mkdir $out; /bin/cp graph g2 $out/; /usr/bin/stat -c %a graph > $out/mode', {
        inputDrvs,
        // A path inside a store object names the object, as in Nix.
        env: { exportReferencesGraph: `graph ${dep2} g2 ${dep}/x` },
      });
      const [o] = await realiseOrThrow(store, [drv]);
      const out = store.realPath(o!.get('out')!);
      // What real Nix 2.8 wrote for the same pair: paths sorted, derivers empty.
      const [first, second] = [dep, dep2].sort((a, b) => (a < b ? -1 : 1));
      const entry = (p: string): string => (p === dep ? `${dep}\n\n0\n` : `${dep2}\n\n1\n${dep}\n`);
      expect(readFileSync(`${out}/graph`, 'utf8')).toBe(entry(first!) + entry(second!));
      expect(readFileSync(`${out}/g2`, 'utf8')).toBe(`${dep}\n\n0\n`);
      expect(readFileSync(`${out}/mode`, 'utf8')).toBe('644\n');

      const outside = await addShDrv(store, 'erg-outside', 'echo > $out', {
        env: { exportReferencesGraph: `graph ${dep}` },
      });
      const [r] = await realise(store, [outside]);
      expect(r!.error?.message).toContain(`cannot export the references of '${dep}', which is not in its input closure`);
      const odd = await addShDrv(store, 'erg-odd', 'echo > $out', {
        env: { exportReferencesGraph: 'graph' },
      });
      const [r2] = await realise(store, [odd]);
      expect(r2!.error?.message).toContain("'exportReferencesGraph' has an odd number of words");
    } finally {
      await store.close();
    }
  });

  it('`strata realise -v` streams the builder output as it comes', async () => {
    ensureBuilt();
    const root = tempDir();
    const store = await openChroot(root);
    const drv = await addShDrv(
      store,
      'talk',
      'echo hello-live; /bin/sleep 0.3; echo bye >&2; echo > $out',
    );
    await store.close();
    const quiet = await runStrata(['--store', root, 'realise', store.storeDir.print(drv)]);
    expect(quiet.stderr).not.toContain('hello-live');
    const root2 = tempDir();
    const store2 = await openChroot(root2);
    await addShDrv(store2, 'talk', 'echo hello-live; /bin/sleep 0.3; echo bye >&2; echo > $out');
    await store2.close();
    const loud = await runStrata(['--store', root2, 'realise', '-v', store.storeDir.print(drv)]);
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stderr).toContain('hello-live\nbye\n');
  });

  it('an output built into a chroot store runs: the builder sees its inputs at /nix/store', async () => {
    const root = tempDir();
    const store = await openChroot(root);
    try {
      const tool = await addShDrv(
        store,
        'tool',
        '/bin/mkdir -p $out/bin; printf "#!/bin/sh\\necho from-tool\\n" > $out/bin/tool; /bin/chmod +x $out/bin/tool',
      );
      const [t] = await realiseOrThrow(store, [tool]);
      const toolOut = store.storeDir.print(t!.get('out')!);
      const user = await addShDrv(store, 'user', `${toolOut}/bin/tool > $out`, {
        inputDrvs: new Map([[tool.baseName, ['out']]]),
        env: { tool: toolOut },
      });
      const [u] = await realiseOrThrow(store, [user]);
      expect(readFileSync(store.realPath(u!.get('out')!), 'utf8')).toBe('from-tool\n');
      // Executable files are 0555, the rest 0444, directories 0555, mtime 1.
      const info = await store.queryPathInfo(u!.get('out')!);
      expect(info!.references.map((r) => r.baseName)).toEqual([]);
      const { statSync } = await import('node:fs');
      const bin = statSync(`${store.realPath(t!.get('out')!)}/bin/tool`);
      expect(bin.mode & 0o7777).toBe(0o555);
      expect(bin.mtimeMs).toBe(1000);
      expect(statSync(store.realPath(u!.get('out')!)).mode & 0o7777).toBe(0o444);
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(!isRoot)('realise: build dirs', () => {
  it('gives builds of one run their own $TMPDIR/nix-build-<name>-<n>, as Nix 2.8 does, and leaves no temp file behind', async () => {
    const root = tempDir();
    const tmp = tempDir();
    const marks = tempDir();
    const store = await openChroot(root);
    const oldTmp = process.env['TMPDIR'];
    process.env['TMPDIR'] = tmp;
    try {
      // Same name, different scripts: two derivations whose build dirs would both be
      // `nix-build-same.drv-0`; both run at once (each waits for the other's mark).
      const wait = `echo > "${marks}/$1"; i=0; while [ ! -e "${marks}/$2" ] && [ $i -lt 100 ]; do /bin/sleep 0.05; i=$((i + 1)); done`;
      const a = await addShDrv(store, 'same', `set -- a b; ${wait}; echo "$NIX_BUILD_TOP" > $out`);
      // This one leaves a file in its build dir.
      const b = await addShDrv(
        store,
        'same',
        `set -- b a; ${wait}; echo "$NIX_BUILD_TOP" > $out; echo left > "$NIX_BUILD_TOP/leftover"`,
      );
      const outs = await realiseOrThrow(store, [a, b], { jobs: 2 });
      const tops = outs.map((o) => readFileSync(store.realPath(o.get('out')!), 'utf8').trim());
      expect(tops.sort()).toEqual([`${tmp}/nix-build-same.drv-0`, `${tmp}/nix-build-same.drv-1`]);
      expect(readdirSync(tmp)).toEqual([]);
    } finally {
      if (oldTmp === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = oldTmp;
      await store.close();
    }
  });
});

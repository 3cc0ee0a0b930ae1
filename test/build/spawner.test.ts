/**
 * The spawners inside the build namespace (src/build/spawner.ts) keep one contract whichever
 * starts the builders: Python's posix_spawn (the default when /usr/bin/python3 exists) or Perl's
 * fork + exec. Each case runs against both.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BuildNamespace, type SpawnerChoice } from '../../src/build/namespace.js';

const isRoot = process.getuid?.() === 0;
const choices: Array<[SpawnerChoice, 'python' | 'perl']> = [];
if (existsSync('/usr/bin/python3')) choices.push(['auto', 'python']);
if (existsSync('/usr/bin/perl')) choices.push(['perl', 'perl']);

describe.runIf(isRoot && choices.length > 0).each(choices)(
  'build spawner (%s → %s)',
  (choice, kind) => {
    let dir: string;
    let ns: BuildNamespace;
    let n = 0;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'strata-spawner-'));
      mkdirSync(join(dir, 'store'));
      ns = await BuildNamespace.open(
        join(dir, 'store'),
        join(dir, 'store'),
        join(dir, 'builds'),
        choice,
      );
    });
    afterAll(async () => {
      await ns?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    /** Runs `sh -c script` through the spawner; returns its exit and its log. */
    async function run(script: string, env: Record<string, string> = {}, argv?: string[]) {
      const cwd = join(dir, `cwd-${n}`);
      const logPath = join(dir, `log-${n++}`);
      mkdirSync(cwd);
      writeFileSync(logPath, '');
      const { exit } = ns.spawn({
        cwd,
        logPath,
        argv: argv ?? ['/bin/sh', '-c', script],
        env: new Map(Object.entries(env)),
      });
      const e = await exit;
      return { ...e, cwd, log: readFileSync(logPath, 'utf8') };
    }

    it('is the spawner asked for', () => {
      expect(ns.spawner).toBe(kind);
    });

    it('gives the builder exactly its environment, its cwd, umask 0022, stdin /dev/null and its own session', async () => {
      const r = await run(
        // The environment as exec'd (dash drops names that are not shell identifiers from its own).
        'echo "env:$(/usr/bin/tr "\\0" "\\n" < /proc/$$/environ | /usr/bin/sort | /usr/bin/tr "\\n" " ")"; echo "cwd:$(pwd)"; echo "umask:$(umask)"; ' +
          'echo "stdin:$(/usr/bin/readlink /proc/self/fd/0)"; ' +
          'read -r _ _ _ _ _ sid _ < /proc/$$/stat; [ "$sid" = $$ ] && echo session:own; echo to-stderr >&2; exit 3',
        { A: '1', 'odd-name': 'x y', PATH: '/path-not-set' },
      );
      expect(r.code).toBe(3);
      expect(r.signal).toBeNull();
      const lines = r.log.split('\n');
      expect(lines[0]).toBe('env:A=1 PATH=/path-not-set odd-name=x y ');
      expect(lines).toContain(`cwd:${r.cwd}`);
      expect(lines).toContain('umask:0022');
      expect(lines).toContain('stdin:/dev/null');
      expect(lines).toContain('session:own');
      expect(lines).toContain('to-stderr');
    });

    it("starts the builder with no signal blocked and none ignored but glibc's own (Python ignores SIGPIPE and SIGXFSZ itself)", async () => {
      const r = await run('/usr/bin/grep -E "^Sig(Ign|Blk):" /proc/self/status');
      expect(r.code).toBe(0);
      // glibc's posix_spawn leaves its two internal signals (32, 33) ignored; see spawner.ts.
      const ignored = kind === 'python' ? '0000000180000000' : '0000000000000000';
      expect(r.log).toBe(`SigBlk:\t0000000000000000\nSigIgn:\t${ignored}\n`);
    });

    it('gives the builder its base name as argv[0], as Nix 2.8 does', async () => {
      const r = await run('', {}, ['/bin/sh', '-c', 'echo "$0"; /usr/bin/tr "\\0" " " < /proc/$$/cmdline', 'x']);
      expect(r.code).toBe(0);
      expect(r.log).toBe('x\nsh -c echo "$0"; /usr/bin/tr "\\0" " " < /proc/$$/cmdline x ');
    });

    it('reports a builder killed by a signal', async () => {
      const r = await run('kill -TERM $$');
      expect(r.code).toBeNull();
      expect(r.signal).toBe('SIGTERM');
    });

    it('reports a builder that cannot be executed in its log, with exit code 1', async () => {
      const r = await run('', {}, ['/nonexistent/builder']);
      expect(r.code).toBe(1);
      expect(r.log).toContain("error: executing '/nonexistent/builder'");
    });

    it('mounts the store overlay volatile: no sync of the disk when the namespace ends', async () => {
      const r = await run(
        `/usr/bin/grep -c " ${join(dir, 'store')} .* overlay .*volatile" /proc/self/mountinfo`,
      );
      expect(r.log).toBe('1\n');
    });

    it('runs builders at the same time', async () => {
      const t0 = Date.now();
      const rs = await Promise.all([run('/bin/sleep 1'), run('/bin/sleep 1'), run('/bin/sleep 1')]);
      expect(rs.map((r) => r.code)).toEqual([0, 0, 0]);
      expect(Date.now() - t0).toBeLessThan(2900);
    });
  },
);

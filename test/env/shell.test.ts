import { existsSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { exitCodeFor } from '../../src/cli/output.js';
import { isStrataError } from '../../src/core/error.js';
import type { Environment } from '../../src/env/environment.js';
import { runShell, shellInvocation } from '../../src/env/shell.js';
import { applyVariables, envVariables, formatExports } from '../../src/env/variables.js';
import { tempDir } from '../support/tmp.js';

const PROFILE = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-strata-env';

function env(realStoreDir: string): Environment {
  const variables = envVariables(PROFILE, (d) => ['bin', 'share', 'share/man'].includes(d));
  return {
    specFile: 'replit.nix',
    storeUri: 'x',
    storeDir: '/nix/store',
    realStoreDir,
    profile: PROFILE,
    packages: [],
    variables,
    source: 'cache',
  };
}

describe('variables', () => {
  it('applyVariables() prepends path lists, keeps defaults when unset, sets STRATA_ENV', () => {
    const vars = env('/nix/store').variables;
    expect(applyVariables(vars, { PATH: '/usr/bin', MANPATH: '' })).toEqual({
      PATH: `${PROFILE}/bin:/usr/bin`,
      MANPATH: `${PROFILE}/share/man:`,
      XDG_DATA_DIRS: `${PROFILE}/share:/usr/local/share:/usr/share`,
      STRATA_ENV: PROFILE,
    });
    expect(formatExports(vars)).toBe(
      `export PATH=${PROFILE}/bin"\${PATH:+:$PATH}"\nexport MANPATH=${PROFILE}/share/man:"\${MANPATH:-}"\nexport XDG_DATA_DIRS=${PROFILE}/share:"\${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"\nexport STRATA_ENV=${PROFILE}\n`,
    );
  });
});

describe('shellInvocation()', () => {
  it('runs the command directly when the store is at its logical dir', () => {
    const inv = shellInvocation(env('/nix/store'), {
      command: ['hello', '-v'],
      baseEnv: { PATH: '/bin' },
    });
    expect(inv).toMatchObject({ file: 'hello', args: ['-v'], namespace: false });
    expect(inv.env['PATH']).toBe(`${PROFILE}/bin:/bin`);
    expect(shellInvocation(env('/nix/store'), { baseEnv: { SHELL: '/bin/zsh' } }).file).toBe(
      '/bin/zsh',
    );
  });

  it('uses a private mount namespace with a bind mount when the files are elsewhere, and needs root for it', () => {
    const inv = shellInvocation(env('/srv/me/nix/store'), {
      command: ['hello'],
      baseEnv: {},
      canMount: true,
    });
    expect(inv.file).toBe('unshare');
    expect(inv.args.slice(0, 3)).toEqual(['--mount', '--propagation', 'private']);
    expect(inv.args.slice(-5)).toEqual([
      '/srv/me/nix/store',
      '/nix/store',
      inv.scratch ? '/nix' : '-',
      inv.scratch ?? '-',
      'hello',
    ]);
    try {
      shellInvocation(env('/srv/me/nix/store'), { command: ['hello'], canMount: false });
      throw new Error('no error');
    } catch (e) {
      expect(isStrataError(e, 'SHELL_NEEDS_ROOT')).toBe(true);
      expect((e as Error).message).toBe(
        "Cannot enter the environment: the store's files are in '/srv/me/nix/store', not at '/nix/store', and mounting them there needs root",
      );
    }
  });
});

describe('runShell() of a command that cannot run', () => {
  // As a shell: 127 for a command not found, 126 for one that is not executable, whether the
  // command runs directly (the store at its logical dir) or through the mount namespace's exec.
  const cases: [string, string[], number][] = [
    ['not found', ['strata-test-no-such-command'], 127],
    ['not found, by path', ['./strata-test-no-such-command'], 127],
    ['not executable (a directory)', ['/'], 126],
  ];
  const exitOf = async (realStoreDir: string, command: string[]): Promise<number> => {
    try {
      return await runShell(env(realStoreDir), { command, stdio: 'pipe', baseEnv: { PATH: '/usr/bin:/bin' } });
    } catch (e) {
      return exitCodeFor(e);
    }
  };
  for (const [what, command, status] of cases) {
    it(`exits ${status} for a command ${what}, in a namespace or not`, async () => {
      expect(await exitOf('/nix/store', command)).toBe(status);
      if (process.getuid?.() !== 0 || !existsSync('/nix/store')) return;
      expect(await exitOf(tempDir(), command)).toBe(status);
    });
  }
});

/**
 * Which command lines a non-root user's strata re-runs in a user + mount namespace: only strata's
 * own options and its command's name count, not an operand that happens to read `mount` or the
 * `--store` of the command `strata shell` runs.
 */
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from 'vitest';

import { needsUserNamespace } from '../../src/cli/rootless.js';

const argv = (...args: string[]) => ['node', 'strata', ...args];

describe('needsUserNamespace, for a user who is not root', () => {
  let uid: MockInstance<() => number>;
  beforeEach(() => {
    uid = vi.spyOn(process as { getuid: () => number }, 'getuid').mockReturnValue(1000);
    vi.stubEnv('STRATA_USERNS', '');
    vi.stubEnv('STRATA_STORE', '');
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  });

  it('is needed for a layered store named before or after the command, and for the layered commands', () => {
    expect(needsUserNamespace(argv('--store', 'layered:///srv/me', 'path-info', 'P'), 'path-info')).toBe(true);
    expect(needsUserNamespace(argv('path-info', '--store=local-overlay:///srv/me', 'P'), 'path-info')).toBe(true);
    expect(needsUserNamespace(argv('init', '/srv/me', '--lower', '/mnt/big'), 'init')).toBe(true);
    expect(needsUserNamespace(argv('--store', '/srv/me', 'mount'), 'mount')).toBe(true);
  });

  it('is not needed because an operand reads like a layered command', () => {
    expect(needsUserNamespace(argv('--store', '/home/me/store', 'add', 'mount'), 'add')).toBe(false);
    expect(needsUserNamespace(argv('--store', '/home/me/store', 'shell', 'x.nix', '--', 'git', 'init'), 'shell')).toBe(false);
  });

  it("does not read the --store of the command strata shell runs", () => {
    expect(needsUserNamespace(argv('--store', '/home/me/store', 'shell', 'x.nix', '--', 'strata', '--store', 'layered:///srv/other', 'layers'), 'shell')).toBe(false);
    expect(needsUserNamespace(argv('--store', 'layered:///srv/me', 'shell', 'x.nix', '--', 'nix-store', '--store', '/tmp/x', '-q'), 'shell')).toBe(true);
  });

  it('is never needed for root', () => {
    uid.mockReturnValue(0);
    expect(needsUserNamespace(argv('--store', 'layered:///srv/me', 'layers'), 'layers')).toBe(false);
  });
});

/**
 * Whether this machine may build a derivation (Nix 2.8's `canBuildLocally`): its `system` must
 * be this machine's or one of the extra platforms, and every `requiredSystemFeatures` entry one
 * of this machine's features. Nix refuses the others rather than run, say, an aarch64 builder
 * that happens to be a shell script.
 */
import { existsSync } from 'node:fs';

import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import { isBuiltinBuilder } from './builtins/index.js';
import { listAttr, structuredAttrsOf } from './structured-attrs.js';

/** Node's names for CPUs → Nix's. */
const NIX_CPU: Record<string, string> = {
  x64: 'x86_64',
  arm64: 'aarch64',
  ia32: 'i686',
  riscv64: 'riscv64',
};

/** This machine's Nix system, e.g. `x86_64-linux`. */
export function hostSystem(): string {
  return `${NIX_CPU[process.arch] ?? process.arch}-${process.platform}`;
}

/** Nix's default `extra-platforms`: an x86_64 Linux also runs i686 code. */
function extraPlatforms(system: string): string[] {
  return system === 'x86_64-linux' ? ['i686-linux'] : [];
}

/** Nix's default `system-features`, sorted as Nix prints them. */
export function hostFeatures(): string[] {
  const f = ['benchmark', 'big-parallel', 'nixos-test'];
  if (existsSync('/dev/kvm')) f.push('kvm');
  return f.sort();
}

/** Throws `SYSTEM_UNSUPPORTED` when this machine cannot build `drv`, with Nix's wording of why. */
export function checkCanBuildLocally(drv: Derivation, display: string): void {
  const attrs = structuredAttrsOf(drv.env, display);
  const required = listAttr(drv.env, attrs, 'requiredSystemFeatures', display);
  const system = hostSystem();
  const features = hostFeatures();
  const builtin = isBuiltinBuilder(drv.builder);
  const platformOk = builtin || drv.system === system || extraPlatforms(system).includes(drv.system);
  if (platformOk && required.every((f) => features.includes(f))) return;
  const set = (xs: string[]): string => `{${[...new Set(xs)].sort().join(', ')}}`;
  throw new StrataError(
    'SYSTEM_UNSUPPORTED',
    `Cannot build '${display}': it needs a '${drv.system}' with features ${set(required)}, but this machine is a '${system}' with features ${set(features)}`,
    { value: display },
  );
}

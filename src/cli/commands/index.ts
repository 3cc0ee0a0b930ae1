/**
 * Every command, declared cheaply. A command module exports `register(program)`; it must not
 * import heavy modules at top level (use `await import()` inside the action).
 */
import type { Command } from 'commander';

const modules: Array<{ register(program: Command): void }> = [];

export function registerAll(program: Command): void {
  for (const m of modules) m.register(program);
}

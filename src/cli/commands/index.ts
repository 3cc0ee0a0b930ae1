/**
 * Every command, declared cheaply. A command module exports `register(program)`; it must not
 * import heavy modules at top level (use `await import()` inside the action).
 */
import type { Command } from 'commander';

import * as add from './add.js';
import * as derivation from './derivation.js';
import * as pathInfo from './path-info.js';
import * as query from './query.js';
import * as sign from './sign.js';

const modules: Array<{ register(program: Command): void }> = [add, pathInfo, query, derivation, sign];

export function registerAll(program: Command): void {
  for (const m of modules) m.register(program);
}

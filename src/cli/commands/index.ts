/**
 * Every command, declared cheaply. A command module exports `register(program)`; it must not
 * import heavy modules at top level (use `await import()` inside the action).
 */
import type { Command } from 'commander';

import * as add from './add.js';
import * as copy from './copy.js';
import * as del from './delete.js';
import * as derivation from './derivation.js';
import * as dump from './dump.js';
import * as env from './env.js';
import * as fsck from './fsck.js';
import * as gc from './gc.js';
import * as hash from './hash.js';
import * as init from './init.js';
import * as key from './key.js';
import * as layers from './layers.js';
import * as mount from './mount.js';
import * as optimise from './optimise.js';
import * as pathInfo from './path-info.js';
import * as query from './query.js';
import * as realise from './realise.js';
import * as restore from './restore.js';
import * as serve from './serve.js';
import * as shell from './shell.js';
import * as sign from './sign.js';
import * as verify from './verify.js';

const modules: Array<{ register(program: Command): void }> = [add, pathInfo, query, derivation, sign, dump, restore, hash, gc, del, verify, optimise, key, realise, init, mount, layers, fsck, copy, serve, env, shell];

export function registerAll(program: Command): void {
  for (const m of modules) m.register(program);
}

#!/usr/bin/env node
/**
 * The `strata` command line. Start-up cost matters (`strata path-info` should cost little more
 * than `node -e 0`), so this file only declares commands; each command module loads the heavy
 * parts of strata (SQLite, compression, HTTP) inside its action, when it runs.
 */
import { Command, CommanderError } from 'commander';

import { BUNDLED_COMMANDS, runFullCli } from './bundled-commands.js';
import { argvForCommander, COMMAND_MODULES, commandNameOf, registerAllCommands } from './command-table.js';
import { GLOBAL_OPTIONS } from './global.js';
import { exitCodeFor, renderError } from './output.js';
import { needsUserNamespace, runInUserNamespace } from './rootless.js';

const program = new Command();
program
  .name('strata')
  .description('A layered, Nix-compatible store')
  .version(process.env['npm_package_version'] ?? '0.1.0', '--version')
  // A usage error is one line and a pointer to the help, as Nix's "Try 'nix --help'", not the
  // whole help (~60 lines) after a typo.
  .showHelpAfterError("Try 'strata --help' or 'strata COMMAND --help' for more information.")
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(s) });
for (const o of GLOBAL_OPTIONS) program.option(o.flags, o.description);

// Only the module of the command being run is loaded (see command-table.ts for the numbers).
const name = commandNameOf(process.argv, program);
if (BUNDLED_COMMANDS && !(name !== undefined && BUNDLED_COMMANDS.includes(name))) {
  runFullCli(); // a per-command bundle, and not this command: nothing has happened yet
} else {
  run()
    .catch((e: unknown) => {
      if (e instanceof CommanderError) {
        // Help and version exit 0; usage errors have been printed by commander and exit 2.
        process.exitCode = e.exitCode === 0 ? 0 : 2;
      } else {
        process.stderr.write(renderError(e));
        process.exitCode = exitCodeFor(e);
      }
    })
    .then(exitWhenWritten);
}

/**
 * Ends the process as soon as the command is done (every command's action returns only when its
 * work is: `serve` waits for a signal, `shell` for its child), rather than after Node has torn
 * the heap down: that took ~30 ms after a 300-path copy on this VM (strace: munmaps from the
 * last close to exit_group). Not while stdout or stderr still queue bytes (a pipe the reader has
 * not emptied): only a natural exit waits for those.
 */
function exitWhenWritten(): void {
  if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit();
}

// No top-level await: scripts/bundle.mjs makes this file part of a CommonJS bundle.
async function run(): Promise<void> {
  const load = name !== undefined && Object.hasOwn(COMMAND_MODULES, name) ? COMMAND_MODULES[name] : undefined;
  if (load) (await load()).register(program);
  else await registerAllCommands(program);
  const argv = argvForCommander(process.argv, program, name);
  // A non-root user on a layered store: this command runs inside a user + mount namespace.
  if (needsUserNamespace(argv, name)) {
    const code = runInUserNamespace(process.argv);
    if (code !== undefined) {
      process.exitCode = code;
      return;
    }
  }
  await program.parseAsync(argv);
}

/**
 * Which commands this build of the CLI holds. The compiled modules and the full bundle
 * (dist/strata.cjs) hold them all. scripts/bundle.mjs also makes one smaller bundle per command
 * module (dist/bundle/<command>.cjs, chosen by bin/strata from the command line) and replaces
 * this module there: `BUNDLED_COMMANDS` names what that bundle holds, and `runFullCli` hands a
 * command line the launcher guessed wrong (help, an option it did not know…) to the full bundle.
 */
export const BUNDLED_COMMANDS: readonly string[] | undefined = undefined;

/** Only a per-command bundle has a fuller CLI to hand over to. */
export function runFullCli(): void {
  throw new Error('runFullCli: this build holds every command');
}

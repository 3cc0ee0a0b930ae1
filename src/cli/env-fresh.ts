/**
 * `strata env SPEC` answered from a fresh cache before the CLI itself is loaded. The issue's
 * target for this case is 1.2× a bare `node -e 0`, and on this kind of VM every page of
 * JavaScript read costs a page fault (~20 µs, bench/startup.ts): the whole CLI bundle (commander, every command,
 * the store) was most of what a fresh answer cost. scripts/bundle.mjs bundles this file alone
 * (dist/bundle/env-fresh.cjs, about a tenth of the `env` bundle), and bin/strata runs it first
 * for `env`. It answers only the plain forms of the command line; anything else (`--help`,
 * `--no-cache`, an option it does not know, a stale or missing cache, any error) returns false
 * and the full CLI runs as if this file did not exist, printing what it prints.
 */
import { freshEnvironment } from '../env/environment.js';
import { formatExports } from '../env/variables.js';
import { environmentJson } from './env-json.js';
import { GLOBAL_OPTIONS, storeOf } from './global.js';
import { printJson } from './output.js';
import { needsUserNamespace } from './rootless.js';

/** The global options' flags (global.ts), by whether they take a value; nothing else is accepted. */
const flagsOf = (o: { flags: string }) => o.flags.replace(/ <.*>$/, '').split(', ');
const WITH_VALUE = new Set(GLOBAL_OPTIONS.filter((o) => o.flags.endsWith('>')).flatMap(flagsOf));
const FLAGS = new Set(GLOBAL_OPTIONS.filter((o) => !o.flags.endsWith('>')).flatMap(flagsOf));

/** What the command line asks, when it is a plain `env SPEC` with global options around it. */
export function plainEnvArgs(
  argv: readonly string[],
): { spec: string; store: string | undefined; json: boolean } | undefined {
  const words: string[] = [];
  let store: string | undefined;
  let json = false;
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) {
      words.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (WITH_VALUE.has(flag)) {
      const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (value === undefined) return undefined;
      if (flag === '--store') store = value;
    } else if (FLAGS.has(a)) {
      if (a === '--json') json = true;
    } else {
      return undefined;
    }
  }
  if (words.length !== 2 || words[0] !== 'env') return undefined;
  return { spec: words[1]!, store, json };
}

/** Prints the environment and returns true when the cache is fresh; false leaves it to the CLI. */
export async function answerFromFreshCache(argv: readonly string[]): Promise<boolean> {
  const args = plainEnvArgs(argv);
  if (!args || needsUserNamespace([...argv], 'env')) return false;
  let env;
  try {
    env = await freshEnvironment(args.spec, storeOf(args.store));
  } catch {
    return false; // the CLI reports it, with its own words
  }
  if (!env) return false;
  if (args.json) printJson(environmentJson(env));
  else process.stdout.write(formatExports(env.variables));
  return true;
}

/** The benches' command-line options: `--name value` and `--flag`, checked (a typo is an error, not a default). */

/** The value after `name`, or `dflt` when `name` is absent. */
export function stringOption(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
  return v;
}

/** A positive number after `name`, or `dflt` when `name` is absent. */
export function numberOption(name: string, dflt: number): number {
  const text = stringOption(name, String(dflt));
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number, not '${text}'`);
  return v;
}

export function flag(name: string): boolean {
  return process.argv.includes(name);
}

/**
 * The variables of an environment: `PATH` and the search paths programs and build tools read,
 * each pointing into the profile, only for directories the profile really has.
 *
 * | variable | profile dirs | when unset before |
 * |---|---|---|
 * | `PATH` | `bin`, `sbin` | just the profile's |
 * | `MANPATH` | `share/man` | trailing `:` (man also searches its default path) |
 * | `INFOPATH` | `share/info` | trailing `:` (info's default path) |
 * | `PKG_CONFIG_PATH` | `lib/pkgconfig`, `share/pkgconfig` | just the profile's |
 * | `ACLOCAL_PATH` | `share/aclocal` | just the profile's |
 * | `XDG_DATA_DIRS` | `share` | then `/usr/local/share:/usr/share` (the XDG default) |
 * | `CPATH` | `include` | just the profile's (C/C++ headers for gcc and clang) |
 * | `LIBRARY_PATH` | `lib` | just the profile's (link-time search for gcc and clang) |
 * | `TERMINFO_DIRS` | `share/terminfo` | trailing `:` (ncurses' compiled-in dir) |
 *
 * All are prepended to what the caller's environment has. `STRATA_ENV` is set to the profile.
 * Deliberately not set: `LD_LIBRARY_PATH` (Nix binaries find their libraries by RPATH; setting
 * it would load the profile's libraries into the host's programs) and `PYTHONPATH` and the like
 * (Nix interpreters find their packages through wrappers; a global path would leak into every
 * interpreter of another version).
 */

/** One variable: its value and how it combines with the caller's. */
export interface EnvVariable {
  name: string;
  /** The environment's part: a `:`-separated list, or the whole value for `set`. */
  value: string;
  /** `prepend`: before the caller's value (`:`-joined); `set`: replaces it. */
  mode: 'prepend' | 'set';
  /** For `prepend`, what follows the value when the caller has none (`''` gives a trailing `:`). */
  fallback?: string | undefined;
}

/** The search paths, in output order. */
export const SEARCH_PATHS: ReadonlyArray<{
  name: string;
  dirs: readonly string[];
  fallback?: string;
}> = [
  { name: 'PATH', dirs: ['bin', 'sbin'] },
  { name: 'MANPATH', dirs: ['share/man'], fallback: '' },
  { name: 'INFOPATH', dirs: ['share/info'], fallback: '' },
  { name: 'PKG_CONFIG_PATH', dirs: ['lib/pkgconfig', 'share/pkgconfig'] },
  { name: 'ACLOCAL_PATH', dirs: ['share/aclocal'] },
  { name: 'XDG_DATA_DIRS', dirs: ['share'], fallback: '/usr/local/share:/usr/share' },
  { name: 'CPATH', dirs: ['include'] },
  { name: 'LIBRARY_PATH', dirs: ['lib'] },
  { name: 'TERMINFO_DIRS', dirs: ['share/terminfo'], fallback: '' },
];

/**
 * The variables of a profile at `profile` (a full logical store path); `hasDir(rel)` tells
 * whether the profile has that directory.
 *
 * @example envVariables('/nix/store/…-strata-env', (d) => d === 'bin') // PATH and STRATA_ENV
 */
export function envVariables(profile: string, hasDir: (rel: string) => boolean): EnvVariable[] {
  const vars: EnvVariable[] = [];
  for (const sp of SEARCH_PATHS) {
    const dirs = sp.dirs.filter((d) => hasDir(d)).map((d) => `${profile}/${d}`);
    if (dirs.length > 0)
      vars.push({ name: sp.name, value: dirs.join(':'), mode: 'prepend', fallback: sp.fallback });
  }
  vars.push({ name: 'STRATA_ENV', value: profile, mode: 'set' });
  return vars;
}

/**
 * The environment a command runs in: `base` with the variables applied.
 *
 * @example applyVariables(vars, process.env).PATH // '/nix/store/…-strata-env/bin:/usr/bin:…'
 */
export function applyVariables(
  vars: readonly EnvVariable[],
  base: NodeJS.ProcessEnv,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const v of vars) {
    if (v.mode === 'set') {
      env[v.name] = v.value;
      continue;
    }
    const old = base[v.name];
    const rest = old !== undefined && old !== '' ? old : v.fallback;
    env[v.name] = rest === undefined ? v.value : `${v.value}:${rest}`;
  }
  return env;
}

/** Quotes a string for POSIX shells: single quotes, with `'` written as `'\''`. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * `export` lines for `eval "$(strata env SPEC)"`; path lists are prepended to the shell's own.
 *
 * @example formatExports([{ name: 'PATH', value: '/nix/store/…/bin', mode: 'prepend' }])
 * // export PATH=/nix/store/…/bin"${PATH:+:$PATH}"
 */
export function formatExports(vars: readonly EnvVariable[]): string {
  return vars
    .map((v) => {
      if (v.mode === 'set') return `export ${v.name}=${shellQuote(v.value)}\n`;
      if (v.fallback === undefined)
        return `export ${v.name}=${shellQuote(v.value)}"\${${v.name}:+:$${v.name}}"\n`;
      return `export ${v.name}=${shellQuote(v.value)}:"\${${v.name}:-${v.fallback}}"\n`;
    })
    .join('');
}

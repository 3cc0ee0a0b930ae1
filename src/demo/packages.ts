/**
 * The demo's package set: small but real packages, each a derivation built by strata with
 * `/bin/sh` as the builder (no Nix evaluator needed). Three kinds, so the big disk looks like a
 * real one: shell tools, C programs compiled by the host's C compiler into ELF executables, and a
 * shared library with programs that link against it (references between packages).
 *
 * Generation 1 of the big disk holds `GENERATION_1`; generation 2 adds `GENERATION_2_EXTRA`.
 * `LOCAL_ONLY` is what the demo user builds themselves (no big disk has it).
 */

export interface DemoPackage {
  /** Attribute name in the package index (`pkgs.<attr>`). */
  attr: string;
  /** Store path name. */
  name: string;
  /** Attributes of other demo packages this one uses at build and run time. */
  deps: string[];
  /** Builder script; `@dep@` is replaced by the dependency's output path. */
  script: (deps: Record<string, string>) => string;
}

// The builder's PATH is /path-not-set (as in Nix); C packages use the host toolchain explicitly.
const TOOLCHAIN = 'export PATH=/usr/bin:/bin';

function shellTool(attr: string, body: string): DemoPackage {
  return {
    attr,
    name: `${attr}-1.0`,
    deps: [],
    script: () => `/bin/mkdir -p $out/bin $out/share/doc/${attr}
/bin/cat > $out/bin/${attr} <<'EOF'
#!/bin/sh
${body}
EOF
/bin/chmod 555 $out/bin/${attr}
echo "${attr}: a demo tool" > $out/share/doc/${attr}/README`,
  };
}

function cProgram(attr: string, body: string): DemoPackage {
  return {
    attr,
    name: `${attr}-2.1`,
    deps: [],
    script: () => `${TOOLCHAIN}
mkdir -p $out/bin $out/share/man/man1
cat > main.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
${body}
  return 0;
}
EOF
cc -O1 -o $out/bin/${attr} main.c
echo ".TH ${attr.toUpperCase()} 1" > $out/share/man/man1/${attr}.1`,
  };
}

const libgreet: DemoPackage = {
  attr: 'libgreet',
  name: 'libgreet-3.0',
  deps: [],
  script: () => `${TOOLCHAIN}
mkdir -p $out/lib $out/include $out/lib/pkgconfig
cat > greet.c <<'EOF'
#include <stdio.h>
void greet(const char *who) { printf("greetings, %s, from libgreet\\n", who); }
EOF
echo 'void greet(const char *who);' > $out/include/greet.h
cc -O1 -shared -fPIC -o $out/lib/libgreet.so greet.c
printf 'Name: libgreet\\nVersion: 3.0\\nLibs: -L%s/lib -lgreet\\nCflags: -I%s/include\\n' $out $out > $out/lib/pkgconfig/libgreet.pc`,
};

function greeter(attr: string, who: string): DemoPackage {
  return {
    attr,
    name: `${attr}-1.2`,
    deps: ['libgreet'],
    script: (d) => `${TOOLCHAIN}
mkdir -p $out/bin
cat > main.c <<'EOF'
#include <greet.h>
int main(void) { greet("${who}"); return 0; }
EOF
cc -O1 -I${d['libgreet']}/include -o $out/bin/${attr} main.c -L${d['libgreet']}/lib -lgreet -Wl,-rpath,${d['libgreet']}/lib`,
  };
}

const SHELL_TOOLS: Array<[string, string]> = [
  ['hello', 'echo "Hello, world!"'],
  ['cowsay', 'msg="${*:-moo}"; echo " ${msg}"; echo "  \\\\   ^__^"; echo "   \\\\  (oo)\\\\_______"; echo "      (__)\\\\       )\\\\/\\\\"'],
  ['figlet', 'echo "#### $* ####"'],
  ['rev-words', 'for w in "$@"; do printf "%s " "$w" | /usr/bin/rev; done; echo'],
  ['countdown', 'n=${1:-3}; while [ "$n" -gt 0 ]; do echo $n; n=$((n-1)); done; echo liftoff'],
  ['upper', '/usr/bin/tr a-z A-Z'],
  ['lower', '/usr/bin/tr A-Z a-z'],
  ['wordcount', '/usr/bin/wc -w'],
  ['today', '/bin/date +%Y-%m-%d'],
  ['repeat', 'i=0; while [ $i -lt ${2:-2} ]; do echo "$1"; i=$((i+1)); done'],
  ['joiner', 'IFS=,; echo "$*"'],
  ['fortune', 'echo "You will build something reproducible today."'],
  ['banner', 'echo "=============="; echo "  $*"; echo "=============="'],
  ['roll', 'echo $(( $(/usr/bin/od -An -N1 -tu1 /dev/urandom) % 6 + 1 ))'],
  ['sysinfo', '/bin/uname -sm'],
  ['calc', 'echo $(( $* ))'],
  ['lines', '/usr/bin/wc -l'],
  ['first', '/usr/bin/head -n1'],
  ['last', '/usr/bin/tail -n1'],
  ['sorter', '/usr/bin/sort'],
  ['uniq-count', '/usr/bin/sort | /usr/bin/uniq -c'],
  ['yes-no', 'echo yes; echo no'],
  ['pwdx', 'pwd'],
  ['envcheck', 'echo "PATH has $(echo "$PATH" | /usr/bin/tr : "\\n" | /usr/bin/wc -l) entries"'],
  ['greeting-card', 'echo "Dear ${1:-friend}, enjoy your instant environment."'],
  ['tabulate', '/usr/bin/column -t 2>/dev/null || /bin/cat'],
  ['timestamp', '/bin/date +%s'],
  ['shout', 'echo "$*!!!" | /usr/bin/tr a-z A-Z'],
  ['whisper', 'echo "$*..." | /usr/bin/tr A-Z a-z'],
  ['palindrome', 'r=$(echo "$1" | /usr/bin/rev); [ "$r" = "$1" ] && echo yes || echo no'],
];

const C_PROGRAMS: Array<[string, string]> = [
  ['cfact', '  unsigned long long f = 1; int n = argc > 1 ? atoi(argv[1]) : 10; for (int i = 2; i <= n; i++) f *= i; printf("%llu\\n", f);'],
  ['cfib', '  unsigned long long a = 0, b = 1; int n = argc > 1 ? atoi(argv[1]) : 20; for (int i = 0; i < n; i++) { unsigned long long t = a + b; a = b; b = t; } printf("%llu\\n", a);'],
  ['cprimes', '  int n = argc > 1 ? atoi(argv[1]) : 30; for (int i = 2; i <= n; i++) { int p = 1; for (int j = 2; j * j <= i; j++) if (i % j == 0) p = 0; if (p) printf("%d ", i); } printf("\\n");'],
  ['cstrlen', '  for (int i = 1; i < argc; i++) printf("%zu\\n", strlen(argv[i]));'],
  ['csum', '  long s = 0; for (int i = 1; i < argc; i++) s += atol(argv[i]); printf("%ld\\n", s);'],
  ['cecho', '  for (int i = 1; i < argc; i++) printf("%s%s", argv[i], i + 1 < argc ? " " : "\\n");'],
  ['cupper', '  int c; while ((c = getchar()) != EOF) putchar(c >= 97 && c <= 122 ? c - 32 : c);'],
  ['ccount', '  long n = 0; int c; while ((c = getchar()) != EOF) n++; printf("%ld\\n", n);'],
  ['cgcd', '  long a = argc > 2 ? atol(argv[1]) : 12, b = argc > 2 ? atol(argv[2]) : 18; while (b) { long t = a % b; a = b; b = t; } printf("%ld\\n", a);'],
  ['cpow', '  long b = argc > 2 ? atol(argv[1]) : 2, e = argc > 2 ? atol(argv[2]) : 10, r = 1; while (e-- > 0) r *= b; printf("%ld\\n", r);'],
  ['chex', '  for (int i = 1; i < argc; i++) printf("%lx\\n", atol(argv[i]));'],
  ['crev', '  for (int i = 1; i < argc; i++) { for (int j = (int)strlen(argv[i]) - 1; j >= 0; j--) putchar(argv[i][j]); putchar(10); }'],
  ['csquare', '  for (int i = 1; i < argc; i++) { long x = atol(argv[i]); printf("%ld\\n", x * x); }'],
  ['cbits', '  for (int i = 1; i < argc; i++) printf("%d\\n", __builtin_popcountl(atol(argv[i])));'],
  ['cmax', '  long m = 0; for (int i = 1; i < argc; i++) { long x = atol(argv[i]); if (i == 1 || x > m) m = x; } printf("%ld\\n", m);'],
  ['cmin', '  long m = 0; for (int i = 1; i < argc; i++) { long x = atol(argv[i]); if (i == 1 || x < m) m = x; } printf("%ld\\n", m);'],
];

/** Generation 1 of the big disk: 50 packages. */
export const GENERATION_1: DemoPackage[] = [
  ...SHELL_TOOLS.map(([a, b]) => shellTool(a, b)),
  ...C_PROGRAMS.map(([a, b]) => cProgram(a, b)),
  libgreet,
  greeter('greet-world', 'world'),
  greeter('greet-team', 'team'),
  greeter('greet-you', 'you'),
];

/** What generation 2 adds. */
export const GENERATION_2_EXTRA: DemoPackage[] = [
  shellTool('weather', 'echo "sunny, 21 degrees (reproducibly)"'),
  shellTool('motd', 'echo "Welcome to generation 2 of the big disk"'),
  cProgram('ccube', '  for (int i = 1; i < argc; i++) { long x = atol(argv[i]); printf("%ld\\n", x * x * x); }'),
  greeter('greet-gen2', 'generation 2'),
];

/** Built by the demo user in their own upper layer: no big disk has it. */
export const LOCAL_ONLY: DemoPackage = shellTool('my-tool', 'echo "built in my own upper layer"');

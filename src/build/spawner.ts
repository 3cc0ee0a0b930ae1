/**
 * The spawner: a small process inside the build namespace that starts builders for us, so that
 * Node (a large, multi-threaded process whose fork costs ~45 ms here) never forks per build.
 *
 * Protocol, the same for both implementations. Requests on stdin: a 4-byte big-endian length,
 * then NUL-separated fields `id, cwd, log file, argc, argv…, env…` (`NAME=value`; NUL cannot
 * occur in either). Answers on stdout: `ready python|perl` once, then `started <id> <pid>` and
 * `exit <id> <code> <signal>` (code -1 when killed). Each builder gets its own session, umask
 * 0022, stdin /dev/null, stdout and stderr appended to the log, exactly the given environment,
 * every signal at its default disposition; the program run is argv[0], and the argv[0] it
 * sees is its base name, as Nix 2.8 gives builders (`sh -c 'echo $0'` prints `sh`). On end of input the spawner
 * kills what still runs and exits.
 *
 * Why Python first: `os.posix_spawn` starts a builder with glibc's vfork-style clone, sharing
 * the spawner's memory until the exec. Perl can only fork(), which copies its page tables and
 * then pays a copy-on-write fault, with a TLB flush of both CPUs, for every page either side
 * writes before the exec. On this paravirtualised VM (PVM) faults and flushes are what a process
 * start costs: `perf record` of a 100-build run put 43 % of all CPU in the Perl spawner and its
 * forked children, against 15 % in the builders themselves, and a loop of 200 starts of
 * `sh -c 'echo > f'` took 10.9 ms of CPU each with Perl's fork + exec, 8.2 ms with
 * `os.posix_spawn`. The flushes also interrupt the other CPU, where the other build runs.
 * Python 3.8+ is at /usr/bin/python3 on most Debian systems; without it the Perl loop (perl-base
 * is on every Debian system) does the same with fork + exec.
 *
 * One difference: glibc's posix_spawn leaves its two internal signals (32 and 33, below
 * SIGRTMIN) ignored in the child, and no attribute can reset them. glibc programs install their
 * own handlers for them when they need them; output paths and contents are not affected.
 */

/** The Perl spawner (fork + exec). */
export const SPAWNER_PERL = `
use strict; use POSIX qw(setsid WNOHANG _exit);
$| = 1;
my %kids; my $buf = ''; my $eof = 0;
$SIG{CHLD} = sub {};
print "ready perl\\n";
while (1) {
  while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
    my $st = $?;
    next unless exists $kids{$pid};
    my $id = delete $kids{$pid};
    my $sig = $st & 127;
    print "exit $id " . ($sig ? -1 : $st >> 8) . " $sig\\n";
  }
  if ($eof) { kill 'KILL', map { -$_ } keys %kids; _exit(0); }
  my $rin = ''; vec($rin, fileno(STDIN), 1) = 1;
  # The timeout covers a child exiting between waitpid and select.
  next if select($rin, undef, undef, 0.05) <= 0;
  my $r = sysread(STDIN, $buf, 65536, length $buf);
  if (!$r) { $eof = 1; next; }
  while (length($buf) >= 4) {
    my $len = unpack('N', $buf);
    last if length($buf) < 4 + $len;
    my @f = split(/\\0/, substr($buf, 4, $len), -1);
    substr($buf, 0, 4 + $len) = '';
    my ($id, $cwd, $log, $argc) = splice(@f, 0, 4);
    my @argv = splice(@f, 0, $argc);
    my $pid = fork();
    if (!defined $pid) { print "exit $id 1 0\\n"; next; }
    if ($pid == 0) {
      setsid(); umask(022);
      open(STDIN, '<', '/dev/null'); open(STDOUT, '>>', $log) or _exit(1); open(STDERR, '>&', *STDOUT);
      chdir($cwd) or do { print STDERR "error: cannot change to '$cwd': $!\\n"; _exit(1) };
      %ENV = ();
      for (@f) { my $i = index($_, '='); $ENV{substr($_, 0, $i)} = substr($_, $i + 1); }
      (my $name = $argv[0]) =~ s{.*/}{}s;
      exec { $argv[0] } $name, @argv[1 .. $#argv];
      print STDERR "error: executing '$argv[0]': $!\\n";
      _exit(1);
    }
    $kids{$pid} = $id;
    print "started $id $pid\\n";
  }
}
`;

/**
 * The Python spawner (posix_spawn). `$1` is the Perl spawner, used instead on a Python older
 * than 3.8 (no `setsid` for posix_spawn). SIGCHLD wakes the loop through a wakeup pipe, so an
 * exit is never missed between `waitpid` and `select`.
 */
export const SPAWNER_PYTHON = `
import os, sys
if sys.version_info < (3, 8):
    os.execv('/bin/sh', ['sh', '-c', 'if [ -x /usr/bin/perl ]; then exec /usr/bin/perl -e "$1"; fi; echo ready cat; exec cat > /dev/null', 'sh', sys.argv[1]])
import select, signal, struct
os.umask(0o022)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
DEFAULT = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
kids = {}

def say(line):
    os.write(1, line.encode())

def fail(log, rid, msg):
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, msg.encode('utf-8', 'surrogateescape'))
        os.close(fd)
    except OSError:
        pass
    say('exit %s 1 0\\n' % rid)

def start(f):
    rid = f[0].decode()
    cwd, log, argc = f[1], f[2], int(f[3])
    argv = f[4:4 + argc]
    env = {}
    for e in f[4 + argc:]:
        i = e.index(b'=')
        env[e[:i]] = e[i + 1:]
    try:
        os.chdir(cwd)
    except OSError as e:
        return fail(log, rid, "error: cannot change to '%s': %s\\n" % (os.fsdecode(cwd), e.strerror))
    try:
        pid = os.posix_spawn(argv[0], [os.path.basename(argv[0])] + argv[1:], env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ], setsid=True, setsigdef=DEFAULT, setsigmask=[])
    except OSError as e:
        return fail(log, rid, "error: executing '%s': %s\\n" % (os.fsdecode(argv[0]), e.strerror))
    finally:
        os.chdir('/')
    kids[pid] = rid
    say('started %s %d\\n' % (rid, pid))

say('ready python\\n')
buf = b''
while True:
    while kids:
        pid, st = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        rid = kids.pop(pid, None)
        if rid is None:
            continue
        if os.WIFSIGNALED(st):
            say('exit %s -1 %d\\n' % (rid, os.WTERMSIG(st)))
        else:
            say('exit %s %d 0\\n' % (rid, os.WEXITSTATUS(st)))
    ready = select.select([0, wake_r], [], [])[0]
    if wake_r in ready:
        try:
            while os.read(wake_r, 256):
                pass
        except BlockingIOError:
            pass
    if 0 not in ready:
        continue
    data = os.read(0, 65536)
    if not data:
        for pid in kids:
            try:
                os.kill(-pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)
    buf += data
    while len(buf) >= 4:
        n = struct.unpack('>I', buf[:4])[0]
        if len(buf) < 4 + n:
            break
        f = buf[4:4 + n].split(b'\\0')
        buf = buf[4 + n:]
        start(f)
`;

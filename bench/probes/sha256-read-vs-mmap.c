/*
 * SHA-256 of one file three ways, with OpenSSL's EVP (what Nix 2.8 and Node use): through a
 * reused read() buffer of N bytes (Nix reads 64 KiB at a time), through mmap, and through mmap
 * with MAP_POPULATE. Behind BENCHMARKS.md "Why (a) stays a tie": the hash is fast only on bytes
 * already in the CPU's cache.
 *
 * Build and run (Node's headers carry OpenSSL's; Debian's libcrypto.so.3 is linked by path):
 *   gcc -O2 -I/usr/include/node bench/probes/sha256-read-vs-mmap.c -o /tmp/sha-probe \
 *     /usr/lib/x86_64-linux-gnu/libcrypto.so.3
 *   for m in 'r 65536' m mp; do /usr/bin/time -f "$m %e s %U u %S s" /tmp/sha-probe FILE $m; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3 || (argv[2][0] == 'r' && argc < 4)) {
    fprintf(stderr, "usage: %s FILE r BUFFER_BYTES | m | mp\n", argv[0]);
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return perror(argv[1]), 1;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  if (argv[2][0] == 'm') {
    int flags = MAP_SHARED | (argv[2][1] == 'p' ? MAP_POPULATE : 0);
    unsigned char *p = mmap(NULL, st.st_size, PROT_READ, flags, fd, 0);
    if (p == MAP_FAILED) return perror("mmap"), 1;
    madvise(p, st.st_size, MADV_SEQUENTIAL);
    const off_t step = 1 << 20;
    for (off_t o = 0; o < st.st_size; o += step) EVP_DigestUpdate(ctx, p + o, st.st_size - o < step ? st.st_size - o : step);
  } else {
    size_t n = strtoul(argv[3], NULL, 10);
    unsigned char *buf = malloc(n);
    ssize_t k;
    while ((k = read(fd, buf, n)) > 0) EVP_DigestUpdate(ctx, buf, k);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len;
  EVP_DigestFinal_ex(ctx, md, &len);
  for (unsigned i = 0; i < len; i++) printf("%02x", md[i]);
  printf("\n");
  return 0;
}

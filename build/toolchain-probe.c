/* Compiled and audited with a flavour's flags before CPython is configured: proves that
 * this toolchain, with these flags, really emits stack canaries and fortified calls
 * (gcc records -f switches in the binary, never -D ones, so the CPython binaries alone
 * cannot prove _FORTIFY_SOURCE). For a flavour that requires control-flow integrity the
 * driver also runs it: plainly it must exit 0, and `toolchain-probe forge` (a call
 * through a pointer of the wrong function type) must die with SIGILL. */
#include <stdio.h>
#include <string.h>

int probe(const char *src, size_t n)
{
    char buf[64];
    memcpy(buf, src, n);                       /* size of buf known: __memcpy_chk */
    buf[n < sizeof buf ? n : sizeof buf - 1] = '\0';
    return snprintf(NULL, 0, "%s", buf);
}

/* Indirect calls, opaque to the optimiser: a CFI build checks both; only the second one
 * is of the wrong type (undefined behaviour; never run by the driver without CFI). */
static int (*volatile checked)(const char *, size_t) = probe;
typedef int (*wrong_type)(double);

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "forge") == 0) {
        wrong_type forged = (wrong_type)checked;
        return forged(1.0) == 0 ? 2 : 3;
    }
    return checked(argv[0], strlen(argv[0]) % 64) > 0 ? 0 : 1;
}

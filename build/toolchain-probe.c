/* Compiled and audited with a flavour's flags before CPython is configured: proves that
 * this toolchain, with these flags, really emits stack canaries and fortified calls
 * (gcc records -f switches in the binary, never -D ones, so the CPython binaries alone
 * cannot prove _FORTIFY_SOURCE). */
#include <stdio.h>
#include <string.h>

int probe(const char *src, size_t n)
{
    char buf[64];
    memcpy(buf, src, n);                       /* size of buf known: __memcpy_chk */
    buf[n < sizeof buf ? n : sizeof buf - 1] = '\0';
    return snprintf(NULL, 0, "%s", buf);
}

int main(int argc, char **argv)
{
    (void)argc;
    return probe(argv[0], strlen(argv[0]) % 64) > 0 ? 0 : 1;
}

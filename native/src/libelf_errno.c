/* libelf's error state, replacing the one member of bookworm's libelf.a that cannot be
 * linked into a shared object.
 *
 * Debian builds libelf.a as position-independent *executable* code: its only thread-local
 * variable, the last error in elf_error.o, uses the local-exec TLS model
 * (R_X86_64_TPOFF32), which `ld -shared` refuses. Every other member is fine. Defining
 * the three functions of that member here (compiled -fPIC: general-dynamic TLS) means
 * the linker never pulls elf_error.o out of the archive, and the rest of libelf.a links
 * into _pyisolate with libbpf. Semantics as libelf documents them (libelf.h): elf_errno()
 * returns the last error and clears it; elf_errmsg(0) describes the last error or returns
 * NULL when there is none, elf_errmsg(-1) describes the last error, elf_errmsg(n) error n.
 * The messages are generic ("libelf error N"): libbpf only quotes them in its log. */
#include <stdio.h>

/* Called by libelf; hidden like everything else in the module. */
int elf_errno(void);
const char *elf_errmsg(int error);
void __libelf_seterrno(int value);

static __thread int last_error;
static __thread char message[32];

int
elf_errno(void)
{
    int error = last_error;
    last_error = 0;
    return error;
}

void
__libelf_seterrno(int value)
{
    last_error = value;
}

const char *
elf_errmsg(int error)
{
    if (error == 0 && last_error == 0)
        return NULL;
    if (error == 0 || error == -1)
        error = last_error;
    if (error == 0)
        return "no error";
    snprintf(message, sizeof(message), "libelf error %d", error);
    return message;
}

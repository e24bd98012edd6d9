/* Edge coverage of an instrumented backend, for the fuzzer's feedback (harness/fuzz).
 *
 * A backend compiled with GCC's -fsanitize-coverage=trace-pc calls
 * __sanitizer_cov_trace_pc() at every basic block. This runtime (linked into it, never
 * instrumented itself) turns consecutive blocks into an edge id, AFL style
 * (prev >> 1 ^ cur, hashed into 1 MiB), and counts hits in a bitmap shared through
 * /dev/shm/sndif-cov-<pid>: the harness reads it after each example while the process
 * runs, so no exit-time flush (gcov's .gcda) is needed. Addresses are taken relative to
 * the executable's load address, so that one build gives the same ids in every process
 * (for the program's own code; shared libraries move with ASLR).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define SNDIF_COV_SIZE (1u << 20) /* 1 MiB: few collisions at snd_be's ~40k edges */

static uintptr_t sndif_cov_base; /* the executable's load address (PIE) */
static unsigned char *sndif_cov_map;
static __thread uintptr_t sndif_cov_prev;

static int sndif_cov_first(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(uintptr_t *)data = (uintptr_t)info->dlpi_addr; /* the first object is the program */
    return 1;
}

__attribute__((constructor)) static void sndif_cov_init(void)
{
    char path[64];
    dl_iterate_phdr(sndif_cov_first, &sndif_cov_base);
    snprintf(path, sizeof path, "/dev/shm/sndif-cov-%d", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (ftruncate(fd, SNDIF_COV_SIZE) == 0) {
        void *m = mmap(NULL, SNDIF_COV_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED)
            sndif_cov_map = m;
    }
    close(fd);
}

void __sanitizer_cov_trace_pc(void)
{
    unsigned char *map = sndif_cov_map;
    if (map == NULL)
        return; /* before the constructor, or no /dev/shm: coverage off, backend runs */
    uintptr_t cur = (uintptr_t)__builtin_return_address(0) - sndif_cov_base;
    cur = (cur >> 4) ^ (cur << 8);
    cur &= SNDIF_COV_SIZE - 1;
    unsigned char *cell = &map[cur ^ sndif_cov_prev];
    if (*cell != 0xff)
        (*cell)++;
    sndif_cov_prev = cur >> 1;
}

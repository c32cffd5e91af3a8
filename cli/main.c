/* main.c — the station binary's entry point: everything is in cli/. */
#include <malloc.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
	/* Each unit allocates and frees the same few hundred KiB (X.509,
	 * JSON, SQLite, the frames) on its slot's thread.  glibc's defaults
	 * hand that back to the kernel after every unit (madvise/munmap, a
	 * TLB shootdown across the cores each time) and fault it in again:
	 * ~15 % of the station's CPU in a profile of one slot (issue 22).
	 * Keep up to 32 MiB of free heap and serve blocks up to 4 MiB from
	 * it; peak RSS is unchanged, it is only not returned between units. */
	mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
	return cli_main(argc, argv);
}

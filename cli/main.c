/* main.c — the station command line; the commands are cli/cmd-*.c, the
 * table and the parsing cli/cmd.c. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
	return cli_main(argc, argv);
}

/* ui.c — placeholder for the ncurses UI (see ui.h). */
#include <stdio.h>

#include "ui.h"

int ui_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "station tui: the terminal UI is not built yet; "
		"use 'station provision' (batch) meanwhile\n");
	return 2;
}

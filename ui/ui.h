/* ui.h — the technician's terminal UI (ncurses).  A placeholder until the
 * TUI issue lands: the UI will show engine events and send engine commands,
 * holding no business logic of its own. */
#ifndef ST_UI_H
#define ST_UI_H

/* Run the full-screen UI; returns a process exit code. */
int ui_main(int argc, char **argv);

#endif

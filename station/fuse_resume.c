/* fuse_resume.c — what a unit's earlier fuse runs left open, read back from
 * their steps (st_fuse_resume): the fuse run (fuses.c) writes those steps,
 * and only the fuse module reads their names and details. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "station/fuses.h"

/* The field a fuse step names ("field NAME ..." or "lifecycle step NAME
 * ..."), into out; false when it names none. */
static bool step_field(const char *detail, char out[32])
{
	const char *p = !strncmp(detail, "field ", 6) ? detail + 6 :
			!strncmp(detail, "lifecycle step ", 15) ? detail + 15 : NULL;
	size_t n;

	if (!p)
		return false;
	n = strcspn(p, " ");
	if (!n || n >= 32)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* Rebuild s->pending from the open intents. */
static void resume_pending(st_fuse_resume *s)
{
	size_t len = 0;

	s->pending[0] = '\0';
	for (int i = 0; i < s->nintents && len + 3 < sizeof(s->pending); i++)
		len += (size_t)snprintf(s->pending + len, sizeof(s->pending) - len,
					"%s%s", i ? "; " : "", s->intent[i].detail);
}

/* The intents on field resolve: an outcome (or a new intent) was recorded. */
static void resume_resolve(st_fuse_resume *s, const char *field)
{
	for (int i = 0; i < s->nintents; i++) {
		if (strcmp(s->intent[i].field, field))
			continue;
		s->intent[i] = s->intent[--s->nintents];
		i--;
	}
}

void st_fuse_resume_step(st_fuse_resume *s, const char *name,
			 const char *outcome, const char *detail)
{
	char field[32];
	st_step st;

	/* A stored row: its step's word, once, into the value. */
	if (!st_step_parse(name, &st))
		st = ST_STEP_NONE;
	if ((st == ST_STEP_FUSE_INTENT || st == ST_STEP_LIFECYCLE_INTENT) &&
	    step_field(detail, field)) {
		resume_resolve(s, field);
		if (s->nintents < ST_FUSE_RESUME_INTENTS) {
			snprintf(s->intent[s->nintents].field, sizeof(field), "%s", field);
			snprintf(s->intent[s->nintents++].detail,
				 sizeof(s->intent[0].detail), "%s", detail);
		}
		if (st == ST_STEP_LIFECYCLE_INTENT)
			s->lock_intended = true;
	} else if ((st == ST_STEP_FUSE || st == ST_STEP_FUSE_RESUME) &&
		   step_field(detail, field)) {
		resume_resolve(s, field);
	} else if (st == ST_STEP_LIFECYCLE &&
		   strcmp(outcome, st_outcome_name(ST_OUTCOME_FAIL))) {
		/* its detail names no field: it resolves the lifecycle intent */
		for (int i = 0; i < s->nintents; i++)
			if (strstr(s->intent[i].detail, " lifecycle ")) {
				snprintf(field, sizeof(field), "%s", s->intent[i].field);
				resume_resolve(s, field);
				i = -1;
			}
	}
	resume_pending(s);
}

void st_fuse_resume_identity(st_fuse_resume *s)
{
	s->lock_intended = false;
}

void st_fuse_resume_passed(st_fuse_resume *s)
{
	s->nintents = 0;
	resume_pending(s);
}

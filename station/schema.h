/* schema.h — the documented schema of station.conf and of product profiles
 * (inside station/: config.c loads with it, main.c prints it).
 *
 * Each file is a table of known settings: path, type, whether required,
 * range or choices, default and meaning.  One walk over a libconfig tree
 * checks the whole file against its table and collects EVERY problem
 * (unknown key with the nearest known one, wrong type, out of range, bad
 * choice, missing required key, and in check mode referenced files that do
 * not exist), each with file:line and the setting's path, so
 * `station config check` can list them all and a load can refuse with the
 * first.  docs/configuration.md is generated from the same tables
 * (st_schema_print), and a test compares the two. */
#ifndef ST_SCHEMA_H
#define ST_SCHEMA_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A list of problems found in one or more files, in the order found. */
typedef struct st_problems st_problems;

st_problems *st_problems_new(void);
void st_problems_free(st_problems *pl);
int st_problems_count(const st_problems *pl);
/* Problem i as "FILE:LINE: 'path' what" (":LINE" left out when unknown). */
const char *st_problem_text(const st_problems *pl, int i);
/* Add a problem in file at line (0: unknown) about the setting path (may
 * be NULL for a file-wide problem); out of memory drops it but still
 * counts it, so a load never passes on a lost problem. */
void st_problem_add(st_problems *pl, const char *file, int line,
		    const char *path, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Has any problem been recorded for a setting at or under prefix? */
bool st_problems_under(const st_problems *pl, const char *prefix);

enum st_sk_type {
	SK_GROUP,    /* { ... } */
	SK_LIST,     /* ( { ... }, { ... } ): a list of groups */
	SK_STRING,
	SK_ENUM,     /* a string, one of .choices */
	SK_INT,      /* int or int64 (hex allowed) */
	SK_BOOL,
	SK_STRINGS,  /* [ "a", "b" ] or ( "a", "b" ) */
	SK_INTS,     /* [ 1, 2 ] */
	SK_NUMBERS,  /* [ 1, 2.5 ]: ints or floats */
};

#define SK_REQUIRED 0x1u /* must be present when its group is */
#define SK_FILE     0x2u /* names a file that must exist (config check) */
#define SK_DIR      0x4u /* names a directory that must exist (config check) */
#define SK_PARENT   0x8u /* names a file whose directory must exist (config check) */

/* One known setting.  Path: "hsm.module"; members of a list's groups are
 * "slots[].port".  Adding a setting is one line in a table in schema_tables.c. */
typedef struct st_schema_key {
	const char *path;
	enum st_sk_type type;
	unsigned flags;
	/* Range when min < max: SK_INT its value, SK_STRING its length,
	 * SK_LIST/SK_STRINGS their element count, SK_INTS/SK_NUMBERS each
	 * element's value. */
	long long min, max;
	int count;           /* SK_INTS/SK_NUMBERS: exact element count, 0 any */
	const char *choices; /* SK_ENUM: "device|inject" */
	/* Extra check of a well-typed value (hex digest, programmer URI);
	 * returns NULL when fine, else what is wrong. */
	const char *(*check)(const config_setting_t *s, char *why, size_t len);
	const char *def;     /* default as documented ("" none; NULL required) */
	const char *doc;     /* meaning, one sentence or two */
} st_schema_key;

/* The two schemas. */
extern const st_schema_key st_config_schema[];
extern const size_t st_config_schema_len;
extern const st_schema_key st_profile_schema[];
extern const size_t st_profile_schema_len;

/* Read the configuration file at path into c (config_init'ed by the
 * caller) and check it against st_config_schema, as every load of the
 * configuration does (ranges, choices, required keys).  ST_OK (also with
 * no path: nothing read), ST_E_CONFIG with the first problem in err, or
 * ST_E_NOMEM. */
int st_config_read_checked(config_t *c, const char *path, char *err,
			   size_t errlen);

/* Read file into c.  A missing/unreadable file or a syntax error (with the
 * line libconfig names; "what" says which kind of file) is one problem;
 * returns true when c holds the file. */
bool st_schema_read(config_t *c, const char *file, const char *what,
		    st_problems *pl);

/* Check c (read from file) against the schema; problems go to pl.
 * check_files: also check that referenced files and directories exist
 * (config check; a run leaves that to the part that opens them, so the
 * exit code says which part failed). */
void st_schema_validate(const config_t *c, const char *file,
			const st_schema_key *keys, size_t n, bool check_files,
			st_problems *pl);

/* The schema entry for path, or NULL. */
const st_schema_key *st_schema_find(const st_schema_key *keys, size_t n,
				    const char *path);

/* Values with the schema's documented default when absent (so doc and code
 * share one default).  The setting must have passed st_schema_validate. */
long long st_schema_int(const config_t *c, const st_schema_key *keys, size_t n,
			const char *path);
bool st_schema_bool(const config_t *c, const st_schema_key *keys, size_t n,
		    const char *path);
/* NULL when absent and the default is "". */
const char *st_schema_string(const config_t *c, const st_schema_key *keys,
			     size_t n, const char *path);

/* Line of the setting at a libconfig path, or of its nearest existing
 * parent; 0 when none. */
int st_schema_line(const config_t *c, const char *path);

/* out = the programmer URI of a configured slot: port as `--slot` takes
 * it, with "driver:" in front when driver is given and port has no
 * scheme.  -1 when port's scheme contradicts driver. */
int st_slot_uri(const char *driver, const char *port, char *out, size_t len);

/* Both schemas as Markdown tables (docs/configuration.md's generated part). */
void st_schema_print(FILE *f);
/* One schema (the profile's when profile, else station.conf's) as roff
 * .TP entries: the settings section of station.conf(5) and
 * station-profile(5). */
void st_schema_print_man(FILE *f, bool profile);

#endif

/* schema.c — the walk that checks a file against its settings table
 * (schema_tables.c), the problem list it fills, the documented defaults,
 * and the tables' Markdown rendering. */
#include "station/schema.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base.h"
#include "station/st_int.h"

/* ---- the problem list ------------------------------------------------- */

struct st_problems {
	struct problem { char *text, *path; } *v;
	int n, cap, lost;
};

st_problems *st_problems_new(void)
{
	return calloc(1, sizeof(st_problems));
}

void st_problems_free(st_problems *pl)
{
	if (!pl)
		return;
	for (int i = 0; i < pl->n; i++) {
		free(pl->v[i].text);
		free(pl->v[i].path);
	}
	free(pl->v);
	free(pl);
}

int st_problems_count(const st_problems *pl)
{
	return pl->n + pl->lost;
}

const char *st_problem_text(const st_problems *pl, int i)
{
	return i >= 0 && i < pl->n ? pl->v[i].text : "(problem lost: out of memory)";
}

void st_problem_add(st_problems *pl, const char *file, int line,
		    const char *path, const char *fmt, ...)
{
	char what[1024], head[4096 + 64];
	struct problem p;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(head, sizeof(head), "%s:%d: ", file, line);
	else
		snprintf(head, sizeof(head), "%s: ", file);
	if (pl->n == pl->cap) {
		int cap = pl->cap ? pl->cap * 2 : 16;
		struct problem *v = realloc(pl->v, (size_t)cap * sizeof(*v));

		if (!v) {
			pl->lost++;
			return;
		}
		pl->v = v;
		pl->cap = cap;
	}
	p.path = strdup(path ? path : "");
	if (path)
		p.text = malloc(strlen(head) + strlen(path) + strlen(what) + 8);
	else
		p.text = malloc(strlen(head) + strlen(what) + 1);
	if (!p.path || !p.text) {
		free(p.path);
		free(p.text);
		pl->lost++;
		return;
	}
	if (path)
		sprintf(p.text, "%s'%s' %s", head, path, what);
	else
		sprintf(p.text, "%s%s", head, what);
	pl->v[pl->n++] = p;
}

bool st_problems_under(const st_problems *pl, const char *prefix)
{
	size_t n = strlen(prefix);

	for (int i = 0; i < pl->n; i++) {
		const char *p = pl->v[i].path;

		if (!strncmp(p, prefix, n) && (!p[n] || p[n] == '.' || p[n] == '['))
			return true;
	}
	return false;
}

/* ---- reading and checking --------------------------------------------- */

/* Complete lines in a file (a truncated last line does not count). */
static int file_lines(const char *file)
{
	FILE *f = fopen(file, "r");
	int n = 0, ch;

	if (!f)
		return 0;
	while ((ch = getc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

bool st_schema_read(config_t *c, const char *file, const char *what,
		    st_problems *pl)
{
	if (config_read_file(c, file))
		return true;
	if (config_error_type(c) == CONFIG_ERR_FILE_IO)
		st_problem_add(pl, file, 0, NULL, "cannot read this %s file (missing or "
			       "not readable)", what);
	else
		st_problem_add(pl, file, config_error_line(c), NULL, "%s (libconfig "
			       "syntax)%s", config_error_text(c),
			       config_error_line(c) > file_lines(file) ?
			       "; the file ends here: is it truncated?" : "");
	return false;
}

const st_schema_key *st_schema_find(const st_schema_key *keys, size_t n,
				    const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(keys[i].path, path))
			return &keys[i];
	return NULL;
}

/* Edit distance, for "did you mean". */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64], prev, tmp;

	if (lb >= ST_ARRAY_SIZE(row))
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t best = prev + (a[i - 1] != b[j - 1]);

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			prev = tmp;
		}
	}
	return row[lb];
}

/* The known key under parent pattern nearest to name (NULL if none is
 * close), for a typo's message. */
static const char *nearest(const st_schema_key *keys, size_t n, const char *parent,
			   const char *name)
{
	size_t plen = strlen(parent), best = 3;
	const char *hit = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *k = keys[i].path, *leaf;

		if (plen) {
			if (strncmp(k, parent, plen) || k[plen] != '.')
				continue;
			leaf = k + plen + 1;
		} else {
			leaf = k;
		}
		if (strchr(leaf, '.') || strchr(leaf, '['))
			continue;
		size_t d = distance(name, leaf);

		if (d < best) {
			best = d;
			hit = leaf;
		}
	}
	return hit;
}

static const char *type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_GROUP: return "a group { }";
	case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a number with a fraction";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "true/false";
	case CONFIG_TYPE_ARRAY: return "an array [ ]";
	case CONFIG_TYPE_LIST: return "a list ( )";
	default: return "something else";
	}
}

static const char *want_name(enum st_sk_type t)
{
	switch (t) {
	case SK_GROUP: return "a group { ... }";
	case SK_LIST: return "a list of groups ( { ... }, ... )";
	case SK_STRING: case SK_ENUM: return "a string in double quotes";
	case SK_INT: return "an integer";
	case SK_BOOL: return "true or false";
	case SK_STRINGS: return "a list of strings [ \"...\", ... ]";
	case SK_INTS: return "an array of integers [ ... ]";
	case SK_NUMBERS: return "an array of numbers [ ... ]";
	}
	return "?";
}

static bool is_int(const config_setting_t *s)
{
	int t = config_setting_type(s);

	return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

static bool type_ok(const st_schema_key *k, const config_setting_t *s)
{
	int t = config_setting_type(s), n = config_setting_length(s);

	switch (k->type) {
	case SK_GROUP: return t == CONFIG_TYPE_GROUP;
	case SK_LIST: return t == CONFIG_TYPE_LIST;
	case SK_STRING: case SK_ENUM: return t == CONFIG_TYPE_STRING;
	case SK_INT: return is_int(s);
	case SK_BOOL: return t == CONFIG_TYPE_BOOL;
	case SK_STRINGS: case SK_INTS: case SK_NUMBERS:
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
			return false;
		for (int i = 0; i < n; i++) {
			const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
			int et = config_setting_type(e);

			if (k->type == SK_STRINGS ? et != CONFIG_TYPE_STRING :
			    k->type == SK_INTS ? !is_int(e) :
			    !is_int(e) && et != CONFIG_TYPE_FLOAT)
				return false;
		}
		return true;
	}
	return false;
}

/* Does the enum's "a|b|c" contain v? */
static bool choice_ok(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; p; p = strchr(p, '|'), p = p ? p + 1 : NULL)
		if (!strncmp(p, v, n) && (p[n] == '|' || !p[n]))
			return true;
	return false;
}

/* "a, b or c" */
static void choices_text(const char *choices, char *out, size_t len)
{
	const char *last = strrchr(choices, '|');
	size_t o = 0;

	out[0] = '\0';
	for (const char *p = choices; *p && o + 4 < len; p++) {
		if (*p != '|') {
			out[o++] = *p;
			continue;
		}
		o += (size_t)snprintf(out + o, len - o, "%s", p == last ? " or " : ", ");
	}
	out[o < len ? o : len - 1] = '\0';
}

static double num(const config_setting_t *e)
{
	return config_setting_type(e) == CONFIG_TYPE_FLOAT ?
	       config_setting_get_float(e) : (double)config_setting_get_int64(e);
}

static long long int_value(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_INT64 ?
	       config_setting_get_int64(s) : config_setting_get_int(s);
}

struct walk {
	const st_schema_key *keys;
	size_t n;
	const char *file;
	bool check_files;
	st_problems *pl;
};

/* The file a setting was read from (an @include'd one, or the top file). */
static const char *src(const struct walk *w, const config_setting_t *s)
{
	const char *f = config_setting_source_file(s);

	return f ? f : w->file;
}

/* Does the file or directory a setting names exist? */
static void check_path(const struct walk *w, const st_schema_key *k,
		       const config_setting_t *s, const char *disp)
{
	const char *v = config_setting_get_string(s);
	int line = config_setting_source_line(s);
	struct stat st;

	if (k->flags & SK_FILE) {
		if (stat(v, &st))
			st_problem_add(w->pl, src(w, s), line, disp, "names '%s', which does "
				       "not exist", v);
		else if (S_ISDIR(st.st_mode))
			st_problem_add(w->pl, src(w, s), line, disp, "names '%s', which is a "
				       "directory, not a file", v);
	} else if (k->flags & SK_DIR) {
		if (stat(v, &st) || !S_ISDIR(st.st_mode))
			st_problem_add(w->pl, src(w, s), line, disp, "names '%s', which is not "
				       "an existing directory", v);
	} else if (k->flags & SK_PARENT) {
		char dir[4096];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", v);
		slash = strrchr(dir, '/');
		if (!slash)
			return;
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (stat(dir, &st) || !S_ISDIR(st.st_mode))
			st_problem_add(w->pl, src(w, s), line, disp, "names '%s', whose "
				       "directory '%s' does not exist", v, dir);
	}
}

/* Range, choice and extra checks of a setting of the right type. */
static void check_value(const struct walk *w, const st_schema_key *k,
			const config_setting_t *s, const char *disp)
{
	int line = config_setting_source_line(s), n = config_setting_length(s);
	char why[512];
	bool ranged = k->min < k->max;

	switch (k->type) {
	case SK_INT:
		if (ranged && (int_value(s) < k->min || int_value(s) > k->max))
			st_problem_add(w->pl, src(w, s), line, disp, "is %lld, out of range "
				       "%lld..%lld", int_value(s), k->min, k->max);
		break;
	case SK_STRING: {
		long long len = (long long)strlen(config_setting_get_string(s));

		if (ranged && len < k->min)
			st_problem_add(w->pl, src(w, s), line, disp, "is empty");
		else if (ranged && len > k->max)
			st_problem_add(w->pl, src(w, s), line, disp, "is too long (%lld "
				       "characters, at most %lld)", len, k->max);
		else if (k->check && k->check(s, why, sizeof(why)))
			st_problem_add(w->pl, src(w, s), line, disp, "%s", why);
		else if (w->check_files && k->flags & (SK_FILE | SK_DIR | SK_PARENT))
			check_path(w, k, s, disp);
		break;
	}
	case SK_LIST: case SK_STRINGS:
		if (ranged && (n < k->min || n > k->max))
			st_problem_add(w->pl, src(w, s), line, disp, "has %d entries, must "
				       "have %lld..%lld", n, k->min, k->max);
		break;
	case SK_INTS: case SK_NUMBERS:
		if (k->count && n != k->count) {
			st_problem_add(w->pl, src(w, s), line, disp, "has %d element(s), must "
				       "have %d", n, k->count);
			break;
		}
		for (int i = 0; ranged && i < n; i++) {
			double v = num(config_setting_get_elem(s, (unsigned)i));

			if (v < (double)k->min || v > (double)k->max) {
				st_problem_add(w->pl, src(w, s), line, disp, "element %d is %g, "
					       "out of range %lld..%lld", i + 1, v, k->min,
					       k->max);
				break;
			}
		}
		break;
	default:
		break;
	}
}

static void walk_group(const struct walk *w, const config_setting_t *g,
		       const char *pat, const char *disp);

/* One setting found in the file. */
static void walk_setting(const struct walk *w, const config_setting_t *s,
			 const char *parent_pat, const char *parent_disp)
{
	const char *name = config_setting_name(s);
	char pat[256], disp[256], ch[256];
	int line = config_setting_source_line(s);
	const st_schema_key *k;

	snprintf(pat, sizeof(pat), "%s%s%s", parent_pat, *parent_pat ? "." : "", name);
	snprintf(disp, sizeof(disp), "%s%s%s", parent_disp, *parent_disp ? "." : "", name);
	k = st_schema_find(w->keys, w->n, pat);
	if (!k) {
		const char *near = nearest(w->keys, w->n, parent_pat, name);

		if (near)
			st_problem_add(w->pl, src(w, s), line, disp, "is not a known setting "
				       "(did you mean '%s%s%s'?)", parent_disp,
				       *parent_disp ? "." : "", near);
		else
			st_problem_add(w->pl, src(w, s), line, disp, "is not a known setting "
				       "here (docs/configuration.md lists them)");
		return;
	}
	if (k->type == SK_ENUM && (!type_ok(k, s) ||
				   !choice_ok(k->choices, config_setting_get_string(s)))) {
		choices_text(k->choices, ch, sizeof(ch));
		if (type_ok(k, s))
			st_problem_add(w->pl, src(w, s), line, disp, "'%s' is not %s",
				       config_setting_get_string(s), ch);
		else
			st_problem_add(w->pl, src(w, s), line, disp, "is %s, which is not "
				       "%s (give one of them as a string)",
				       type_name(config_setting_type(s)), ch);
		return;
	}
	if (!type_ok(k, s)) {
		st_problem_add(w->pl, src(w, s), line, disp, "must be %s, not %s",
			       want_name(k->type), type_name(config_setting_type(s)));
		return;
	}
	check_value(w, k, s, disp);
	if (k->type == SK_GROUP) {
		walk_group(w, s, pat, disp);
	} else if (k->type == SK_LIST) {
		char epat[260], edisp[270];

		snprintf(epat, sizeof(epat), "%s[]", pat);
		for (int i = 0; i < config_setting_length(s); i++) {
			const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

			snprintf(edisp, sizeof(edisp), "%s[%d]", disp, i + 1);
			if (!config_setting_is_group(e)) {
				st_problem_add(w->pl, src(w, e), config_setting_source_line(e),
					       edisp, "must be a group { ... }, not %s",
					       type_name(config_setting_type(e)));
				continue;
			}
			walk_group(w, e, epat, edisp);
		}
	}
}

/* Every member of a group, then the required keys it lacks. */
static void walk_group(const struct walk *w, const config_setting_t *g,
		       const char *pat, const char *disp)
{
	size_t plen = strlen(pat);

	for (int i = 0; i < config_setting_length(g); i++)
		walk_setting(w, config_setting_get_elem(g, (unsigned)i), pat, disp);
	for (size_t i = 0; i < w->n; i++) {
		const st_schema_key *k = &w->keys[i];
		const char *leaf;

		if (!(k->flags & SK_REQUIRED))
			continue;
		if (plen) {
			if (strncmp(k->path, pat, plen) || k->path[plen] != '.')
				continue;
			leaf = k->path + plen + 1;
		} else {
			leaf = k->path;
		}
		if (strchr(leaf, '.') || strchr(leaf, '['))
			continue;
		if (!config_setting_get_member(g, leaf)) {
			char full[300];

			snprintf(full, sizeof(full), "%s%s%s", disp, *disp ? "." : "", leaf);
			st_problem_add(w->pl, src(w, g), config_setting_source_line(g), full,
				       "is missing (a required setting: %s)", k->doc);
		}
	}
}

void st_schema_validate(const config_t *c, const char *file,
			const st_schema_key *keys, size_t n, bool check_files,
			st_problems *pl)
{
	struct walk w = { keys, n, file, check_files, pl };

	walk_group(&w, config_root_setting(c), "", "");
}

/* ---- values with the documented default ------------------------------ */

long long st_schema_int(const config_t *c, const st_schema_key *keys, size_t n,
			const char *path)
{
	const config_setting_t *s = config_lookup(c, path);
	const st_schema_key *k = st_schema_find(keys, n, path);

	if (s && is_int(s))
		return int_value(s);
	return k && k->def ? strtoll(k->def, NULL, 0) : 0;
}

bool st_schema_bool(const config_t *c, const st_schema_key *keys, size_t n,
		    const char *path)
{
	const config_setting_t *s = config_lookup(c, path);
	const st_schema_key *k = st_schema_find(keys, n, path);

	if (s && config_setting_type(s) == CONFIG_TYPE_BOOL)
		return config_setting_get_bool(s);
	return k && k->def && !strcmp(k->def, "true");
}

const char *st_schema_string(const config_t *c, const st_schema_key *keys,
			     size_t n, const char *path)
{
	const config_setting_t *s = config_lookup(c, path);
	const st_schema_key *k = st_schema_find(keys, n, path);

	if (s && config_setting_type(s) == CONFIG_TYPE_STRING)
		return config_setting_get_string(s);
	return k && k->def && *k->def ? k->def : NULL;
}

int st_schema_line(const config_t *c, const char *path)
{
	char p[256];
	char *dot;

	snprintf(p, sizeof(p), "%s", path);
	for (;;) {
		const config_setting_t *s = config_lookup(c, p);

		if (s)
			return config_setting_source_line(s);
		dot = strrchr(p, '.');
		if (!dot)
			return 0;
		*dot = '\0';
	}
}

/* ---- the documentation ------------------------------------------------ */

static const char *doc_type(enum st_sk_type t)
{
	switch (t) {
	case SK_GROUP: return "group";
	case SK_LIST: return "list of groups";
	case SK_STRING: return "string";
	case SK_ENUM: return "choice";
	case SK_INT: return "integer";
	case SK_BOOL: return "bool";
	case SK_STRINGS: return "strings";
	case SK_INTS: return "integers";
	case SK_NUMBERS: return "numbers";
	}
	return "?";
}

static void print_table(FILE *f, const char *title, const st_schema_key *keys,
			size_t n)
{
	fprintf(f, "### %s\n\n| setting | type | required / default | range, choices | meaning |\n"
		   "|---|---|---|---|---|\n", title);
	for (size_t i = 0; i < n; i++) {
		const st_schema_key *k = &keys[i];
		char range[256] = "", def[160] = "";
		bool ranged = k->min < k->max;

		switch (k->type) {
		case SK_ENUM:
			for (const char *p = k->choices; *p; p++) {
				size_t o = strlen(range);

				if (*p == '|')
					snprintf(range + o, sizeof(range) - o, "` \\| `");
				else if (o + 1 < sizeof(range))
					range[o] = *p, range[o + 1] = '\0';
			}
			{
				char tmp[256];

				snprintf(tmp, sizeof(tmp), "`%s`", range);
				snprintf(range, sizeof(range), "%s", tmp);
			}
			break;
		case SK_INT:
			if (ranged)
				snprintf(range, sizeof(range), "%lld..%lld", k->min, k->max);
			break;
		case SK_STRING:
			if (ranged)
				snprintf(range, sizeof(range), "length %lld..%lld", k->min, k->max);
			break;
		case SK_LIST: case SK_STRINGS:
			if (ranged)
				snprintf(range, sizeof(range), "%lld..%lld entries", k->min, k->max);
			break;
		case SK_INTS: case SK_NUMBERS:
			snprintf(range, sizeof(range), "%d elements", k->count);
			if (ranged) {
				size_t o = strlen(range);

				snprintf(range + o, sizeof(range) - o, ", each %lld..%lld",
					 k->min, k->max);
			}
			break;
		default:
			break;
		}
		if (k->flags & (SK_FILE | SK_DIR | SK_PARENT)) {
			size_t o = strlen(range);

			snprintf(range + o, sizeof(range) - o, "%s%s", o ? "; " : "",
				 k->flags & SK_FILE ? "existing file" :
				 k->flags & SK_DIR ? "existing directory" :
				 "its directory exists");
		}
		if (k->flags & SK_REQUIRED)
			snprintf(def, sizeof(def), "**required**");
		else if (k->def && *k->def)
			snprintf(def, sizeof(def), "`%s`", k->def);
		else if (k->type != SK_GROUP)
			snprintf(def, sizeof(def), "none");
		fprintf(f, "| `%s` | %s | %s | %s | %s |\n", k->path, doc_type(k->type),
			def, range, k->doc ? k->doc : "");
	}
	fputc('\n', f);
}

void st_schema_print(FILE *f)
{
	print_table(f, "station.conf", st_config_schema, st_config_schema_len);
	print_table(f, "Product profile", st_profile_schema, st_profile_schema_len);
}

/* ---- the same tables for the man pages (station.conf(5), station-profile(5)) */

/* s as roff text: backslashes and leading dots escaped, `code` in bold,
 * hyphens as \- inside code (option and path names). */
static void roff_text(FILE *f, const char *s)
{
	bool code = false, bol = true;

	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		bol = false;
		if (*s == '`') {
			fputs(code ? "\\fR" : "\\fB", f);
			code = !code;
		} else if (*s == '\\') {
			fputs("\\e", f);
		} else if (*s == '-' && code) {
			fputs("\\-", f);
		} else if (*s == '*' && s[1] == '*') {
			s++;
		} else {
			fputc(*s, f);
			bol = *s == '\n';
		}
	}
	if (code)
		fputs("\\fR", f);
}

/* One .TP entry per setting: name, type, default or required, range. */
static void print_man(FILE *f, const st_schema_key *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const st_schema_key *k = &keys[i];
		char range[256] = "";
		bool ranged = k->min < k->max;

		if (k->type == SK_ENUM)
			snprintf(range, sizeof(range), "one of `%s`", k->choices);
		else if (ranged && k->type == SK_INT)
			snprintf(range, sizeof(range), "%lld..%lld", k->min, k->max);
		else if (ranged && k->type == SK_STRING)
			snprintf(range, sizeof(range), "length %lld..%lld", k->min, k->max);
		else if (ranged && (k->type == SK_LIST || k->type == SK_STRINGS))
			snprintf(range, sizeof(range), "%lld..%lld entries", k->min, k->max);
		else if (k->type == SK_INTS || k->type == SK_NUMBERS)
			snprintf(range, sizeof(range), "%d elements", k->count);
		fputs(".TP\n.B ", f);
		roff_text(f, k->path);
		fprintf(f, "\n(%s", doc_type(k->type));
		if (k->flags & SK_REQUIRED)
			fputs(", required", f);
		else if (k->def && *k->def && k->type != SK_GROUP) {
			char def[192];

			snprintf(def, sizeof(def), ", default `%s`", k->def);
			roff_text(f, def);
		}
		if (*range) {
			fputs("; ", f);
			roff_text(f, range);
		}
		if (k->flags & (SK_FILE | SK_DIR | SK_PARENT))
			fputs(k->flags & SK_FILE ? "; an existing file" :
			      k->flags & SK_DIR ? "; an existing directory" :
			      "; its directory exists", f);
		fputs(")\n", f);
		roff_text(f, k->doc ? k->doc : "");
		fputc('\n', f);
	}
}

void st_schema_print_man(FILE *f, bool profile)
{
	if (profile)
		print_man(f, st_profile_schema, st_profile_schema_len);
	else
		print_man(f, st_config_schema, st_config_schema_len);
}

int st_config_read_checked(config_t *c, const char *path, char *err,
			   size_t errlen)
{
	st_problems *pl = st_problems_new();
	int rc = ST_OK;

	if (!pl)
		return ST_E_NOMEM;
	if (path && st_schema_read(c, path, "configuration", pl))
		st_schema_validate(c, path, st_config_schema, st_config_schema_len,
				   false, pl);
	if (st_problems_count(pl)) {
		snprintf(err, errlen, "%s", st_problem_text(pl, 0));
		rc = ST_E_CONFIG;
	}
	st_problems_free(pl);
	return rc;
}

/* fuses.c — the fuse plan: parsed and checked when the profile loads, then
 * run per unit as plan → check → burn → verify, field by field.
 *
 * The rules that make a wrong burn impossible to miss:
 *   - a field is burned only when all of its words read blank (and none is
 *     half-programmed); identical → skipped and recorded; anything else →
 *     the unit is quarantined and nothing more is burned;
 *   - the intent (field, value, request id) is recorded durably before the
 *     burn, so a crash leaves evidence the next run resolves by reading the
 *     device;
 *   - a burn whose outcome is unknown because the link was lost (cable,
 *     brown-out) is an unresolved intent, as after a crash: the next
 *     presentation reads the device and completes, verifies or
 *     quarantines; a device that answers with an error quarantines;
 *   - a field passes only on a fresh read-back with no faulty word;
 *   - nothing burns outside the profile's programming conditions. */
#include "station/st_int.h"
#include "station/fuses.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base.h"

/* Without a "fuses" group the profile's one root-of-trust bank is burned
 * under these conditions (a typical 2.5 V OTP supply ±10 %, 0..85 °C). */
#define LEGACY_VPP_MIN 2250
#define LEGACY_VPP_MAX 2750
#define LEGACY_TEMP_MIN 0
#define LEGACY_TEMP_MAX 850

static const char *const kind_names[] = {
	[ST_FUSE_DATA] = "data",
	[ST_FUSE_WRITE_PROTECT] = "write-protect",
	[ST_FUSE_LIFECYCLE] = "lifecycle",
};

static const char *const lc_names[] = {
	[DRV_LC_OPEN] = "open",
	[DRV_LC_PROVISIONED] = "provisioned",
	[DRV_LC_LOCKED] = "locked",
};

__attribute__((format(printf, 3, 4)))
static int perr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ST_E_CONFIG;
}

/* An integer member (int or int64 in the file); 0 when absent. */
static int get_int(config_setting_t *s, const char *name, long long *out)
{
	config_setting_t *m = config_setting_get_member(s, name);

	if (!m)
		return 0;
	switch (config_setting_type(m)) {
	case CONFIG_TYPE_INT:
		*out = config_setting_get_int(m);
		return 1;
	case CONFIG_TYPE_INT64:
		*out = config_setting_get_int64(m);
		return 1;
	default:
		return -1;
	}
}

/* A number (int or float) element of a list/array. */
static int num_elem(config_setting_t *a, int i, double *out)
{
	config_setting_t *e = config_setting_get_elem(a, (unsigned)i);

	if (!e)
		return -1;
	switch (config_setting_type(e)) {
	case CONFIG_TYPE_INT:
		*out = config_setting_get_int(e);
		return 0;
	case CONFIG_TYPE_INT64:
		*out = (double)config_setting_get_int64(e);
		return 0;
	case CONFIG_TYPE_FLOAT:
		*out = config_setting_get_float(e);
		return 0;
	default:
		return -1;
	}
}

/* A [min, max] pair; 0, or -1 when it is not two numbers in order. */
static int get_range(config_setting_t *s, const char *name, double *lo, double *hi)
{
	config_setting_t *a = config_setting_get_member(s, name);

	if (!a || (!config_setting_is_array(a) && !config_setting_is_list(a)) ||
	    config_setting_length(a) != 2 || num_elem(a, 0, lo) || num_elem(a, 1, hi) ||
	    *lo > *hi)
		return -1;
	return 0;
}

static int parse_conditions(config_setting_t *fuses, const char *path,
			    st_fuse_plan *plan, char *err, size_t errlen)
{
	config_setting_t *c = config_setting_get_member(fuses, "conditions");
	double lo, hi;

	if (!c || !config_setting_is_group(c))
		return perr(err, errlen, "%s: 'fuses.conditions' is missing: give the "
			    "part's programming window, e.g. conditions: { vpp_mv = "
			    "[2375, 2625]; temp_c = [0, 70]; }", path);
	if (get_range(c, "vpp_mv", &lo, &hi) || lo < 0 || hi > 20000)
		return perr(err, errlen, "%s: 'fuses.conditions.vpp_mv' must be "
			    "[min, max] millivolts (0..20000)", path);
	plan->vpp_min_mv = (int)lo;
	plan->vpp_max_mv = (int)hi;
	if (get_range(c, "temp_c", &lo, &hi) || lo < -100 || hi > 300)
		return perr(err, errlen, "%s: 'fuses.conditions.temp_c' must be "
			    "[min, max] degrees Celsius (-100..300)", path);
	plan->temp_min_dc = (int)(lo * 10 + (lo < 0 ? -0.5 : 0.5));
	plan->temp_max_dc = (int)(hi * 10 + (hi < 0 ? -0.5 : 0.5));
	return ST_OK;
}

static int valid_name(const char *n)
{
	if (!n || !*n || strlen(n) >= sizeof(((st_fuse_field *)0)->name))
		return 0;
	for (; *n; n++)
		if (!((*n >= 'a' && *n <= 'z') || (*n >= '0' && *n <= '9') ||
		      *n == '-' || *n == '_'))
			return 0;
	return 1;
}

/* One plan entry into f; idx is its position (1-based) for messages. */
static int parse_field(config_setting_t *e, int idx, const char *path,
		       const uint8_t rot[32], st_fuse_field *f, char *err, size_t errlen)
{
	const char *name = NULL, *kind = "data", *source = NULL, *state = NULL;
	config_setting_t *bits;
	long long bank = -1, word = -1, words = 0, value = 0;
	int has_value;
	double lo, hi;

	if (!config_setting_is_group(e))
		return perr(err, errlen, "%s: fuses.plan entry %d is not a { ... } group",
			    path, idx);
	config_setting_lookup_string(e, "name", &name);
	if (!valid_name(name))
		return perr(err, errlen, "%s: fuses.plan entry %d: 'name' must be 1..31 "
			    "characters a-z 0-9 - _", path, idx);
	snprintf(f->name, sizeof(f->name), "%s", name);
	if (config_setting_get_member(e, "kind") &&
	    !config_setting_lookup_string(e, "kind", &kind))
		kind = "(not a string)";
	for (f->kind = ST_FUSE_DATA; f->kind <= ST_FUSE_LIFECYCLE; f->kind++)
		if (!strcmp(kind, kind_names[f->kind]))
			break;
	if (f->kind > ST_FUSE_LIFECYCLE)
		return perr(err, errlen, "%s: fuse field '%s': kind '%s' is not data, "
			    "write-protect or lifecycle", path, name, kind);
	if (f->kind == ST_FUSE_LIFECYCLE) {
		config_setting_lookup_string(e, "state", &state);
		if (!state || (strcmp(state, "provisioned") && strcmp(state, "locked")))
			return perr(err, errlen, "%s: fuse field '%s': a lifecycle step "
				    "needs state = \"provisioned\" or \"locked\"", path, name);
		f->lifecycle = !strcmp(state, "locked") ? DRV_LC_LOCKED : DRV_LC_PROVISIONED;
		snprintf(f->source, sizeof(f->source), "lifecycle");
		return ST_OK;
	}
	if (get_int(e, "bank", &bank) != 1 || bank < 0 || bank > 255)
		return perr(err, errlen, "%s: fuse field '%s': 'bank' must be 0..255",
			    path, name);
	if (get_int(e, "word", &word) != 1 || word < 0 || word >= ST_FUSE_WORDS)
		return perr(err, errlen, "%s: fuse field '%s': 'word' must be 0..%d "
			    "(a bank is %d words of 32 bits)", path, name,
			    ST_FUSE_WORDS - 1, ST_FUSE_WORDS);
	f->bank = (unsigned)bank;
	f->word = (unsigned)word;
	config_setting_lookup_string(e, "source", &source);
	has_value = get_int(e, "value", &value);
	bits = config_setting_get_member(e, "bits");
	if (source && has_value)
		return perr(err, errlen, "%s: fuse field '%s': give 'source' or 'value', "
			    "not both", path, name);
	if (source) {
		if (strcmp(source, "root_of_trust"))
			return perr(err, errlen, "%s: fuse field '%s': unknown source '%s' "
				    "(the only source is \"root_of_trust\": the hash "
				    "comes from the signed profile, never typed in)",
				    path, name, source);
		if (f->kind != ST_FUSE_DATA || bits)
			return perr(err, errlen, "%s: fuse field '%s': the root of trust "
				    "is a data field of whole words (no 'bits')", path, name);
		if (get_int(e, "words", &words) < 0 || (words && words != ST_FUSE_WORDS) ||
		    word != 0)
			return perr(err, errlen, "%s: fuse field '%s': the root-of-trust "
				    "hash fills a whole bank: word = 0, words = %d", path,
				    name, ST_FUSE_WORDS);
		f->nwords = ST_FUSE_WORDS;
		memcpy(f->target, rot, 32);
		snprintf(f->source, sizeof(f->source), "root_of_trust");
		return ST_OK;
	}
	if (has_value != 1)
		return perr(err, errlen, "%s: fuse field '%s': needs source = "
			    "\"root_of_trust\" or a constant 'value' with 'bits'", path, name);
	if (!bits || get_range(e, "bits", &lo, &hi) || lo < 0 || hi > 31 ||
	    lo != (int)lo || hi != (int)hi)
		return perr(err, errlen, "%s: fuse field '%s': 'bits' must be [low, high] "
			    "with 0 <= low <= high <= 31", path, name);
	f->bit_lo = (unsigned)lo;
	f->bit_hi = (unsigned)hi;
	if (value <= 0 || (unsigned long long)value >> (f->bit_hi - f->bit_lo + 1))
		return perr(err, errlen, "%s: fuse field '%s': 'value' must be 1..%llu "
			    "to fit bits %u..%u (a blank field needs no burn)", path, name,
			    (1ull << (f->bit_hi - f->bit_lo + 1)) - 1, f->bit_lo, f->bit_hi);
	{
		uint32_t v = (uint32_t)value << f->bit_lo;
		uint8_t *t = f->target + f->word * ST_FUSE_WORD;

		t[0] = (uint8_t)v;
		t[1] = (uint8_t)(v >> 8);
		t[2] = (uint8_t)(v >> 16);
		t[3] = (uint8_t)(v >> 24);
	}
	f->nwords = 1;
	snprintf(f->source, sizeof(f->source), "constant");
	return ST_OK;
}

int st_fuse_plan_parse(config_t *c, const char *path, const uint8_t rot[32],
		       unsigned rot_bank, st_fuse_plan *plan, char *err, size_t errlen)
{
	config_setting_t *fuses = config_lookup(c, "fuses"), *list;
	int n, rc;

	memset(plan, 0, sizeof(*plan));
	if (!fuses) {
		st_fuse_field *f = &plan->f[0];

		snprintf(f->name, sizeof(f->name), "root-of-trust");
		snprintf(f->source, sizeof(f->source), "root_of_trust");
		f->kind = ST_FUSE_DATA;
		f->bank = rot_bank;
		f->nwords = ST_FUSE_WORDS;
		memcpy(f->target, rot, 32);
		plan->n = 1;
		plan->vpp_min_mv = LEGACY_VPP_MIN;
		plan->vpp_max_mv = LEGACY_VPP_MAX;
		plan->temp_min_dc = LEGACY_TEMP_MIN;
		plan->temp_max_dc = LEGACY_TEMP_MAX;
		return ST_OK;
	}
	if (!config_setting_is_group(fuses))
		return perr(err, errlen, "%s: 'fuses' must be a group { conditions: ...; "
			    "plan = ( ... ); }", path);
	if ((rc = parse_conditions(fuses, path, plan, err, errlen)))
		return rc;
	list = config_setting_get_member(fuses, "plan");
	if (!list || !config_setting_is_list(list) ||
	    (n = config_setting_length(list)) < 1 || n > ST_FUSE_MAX_FIELDS)
		return perr(err, errlen, "%s: 'fuses.plan' must be a list ( {...}, ... ) "
			    "of 1..%d fields", path, ST_FUSE_MAX_FIELDS);
	for (int i = 0; i < n; i++) {
		st_fuse_field *f = &plan->f[i];

		rc = parse_field(config_setting_get_elem(list, (unsigned)i), i + 1, path,
				 rot, f, err, errlen);
		if (rc)
			return rc;
		for (int j = 0; j < i; j++) {
			const st_fuse_field *g = &plan->f[j];

			if (!strcmp(g->name, f->name))
				return perr(err, errlen, "%s: fuse field '%s' appears twice",
					    path, f->name);
			if (g->kind > f->kind)
				return perr(err, errlen, "%s: fuse field '%s' (%s) comes after "
					    "'%s' (%s): the order must be data fields, then "
					    "write-protect fields, then the lifecycle step",
					    path, f->name, kind_names[f->kind], g->name,
					    kind_names[g->kind]);
			if (g->kind == ST_FUSE_LIFECYCLE && f->kind == ST_FUSE_LIFECYCLE)
				return perr(err, errlen, "%s: fuse plan has two lifecycle "
					    "steps ('%s', '%s')", path, g->name, f->name);
			if (f->kind == ST_FUSE_LIFECYCLE || g->kind == ST_FUSE_LIFECYCLE ||
			    f->bank != g->bank || f->word >= g->word + g->nwords ||
			    g->word >= f->word + f->nwords)
				continue;
			/* Two constants in one word, bits apart: fine on a target
			 * that burns the bank bit by bit (checked per unit). */
			if (!strcmp(f->source, "constant") && !strcmp(g->source, "constant") &&
			    (f->bit_hi < g->bit_lo || g->bit_hi < f->bit_lo) && f->bank < 32) {
				plan->shared_banks |= 1u << f->bank;
				continue;
			}
			if (!strcmp(f->source, "constant") && !strcmp(g->source, "constant"))
				return perr(err, errlen, "%s: fuse fields '%s' and '%s' both "
					    "use bits of word %u of bank %u (bits %u..%u and "
					    "%u..%u overlap): every field needs bits of its own",
					    path, g->name, f->name, f->word, f->bank, g->bit_lo,
					    g->bit_hi, f->bit_lo, f->bit_hi);
			return perr(err, errlen, "%s: fuse fields '%s' and '%s' share "
				    "a word of bank %u: a fuse word can be programmed "
				    "only once, so every field needs words of its own "
				    "(only constants with bits apart may share a word, and "
				    "only on a target that burns the bank bit by bit)",
				    path, g->name, f->name, f->bank);
		}
	}
	plan->n = n;
	return ST_OK;
}

/* ---- running the plan ---- */

enum action { A_SKIP, A_BURN, A_REFUSE };

static const char *const action_names[] = { "skip", "burn", "refuse" };

/* The field's bits in word w (little-endian 32-bit), all of them unless
 * the bank is bit-programmable: there a field is its own bits only, and
 * the word's other bits belong to other fields (or to the chip maker). */
static uint32_t field_mask(const st_fuse_field *f, bool bitwise)
{
	if (!bitwise || strcmp(f->source, "constant"))
		return 0xffffffffu;
	return (uint32_t)(((1ull << (f->bit_hi - f->bit_lo + 1)) - 1) << f->bit_lo);
}

/* Whether f lies in a bank the target burns bit by bit. */
static bool bitwise_bank(uint32_t bitprog_banks, const st_fuse_field *f)
{
	return f->bank < 32 && (bitprog_banks & (1u << f->bank));
}

/* Hex of the field's words (what an operator compares); in a
 * bit-programmable bank, of the field's own bits in its word. */
static void field_hex(const st_fuse_field *f, const uint8_t bank[DRV_FUSE_BANK_LEN],
		      bool bitwise, char out[65])
{
	uint8_t w[ST_FUSE_WORD];

	if (!bitwise || strcmp(f->source, "constant")) {
		st_hex(bank + f->word * ST_FUSE_WORD, f->nwords * ST_FUSE_WORD, out);
		return;
	}
	st_put_le32(w, st_get_le32(bank + f->word * ST_FUSE_WORD) & field_mask(f, true));
	st_hex(w, sizeof(w), out);
}

/* Whether the field's words (bits, when bitwise) in bank are its target. */
static bool holds_target(const st_fuse_field *f, const uint8_t bank[DRV_FUSE_BANK_LEN],
			 bool bitwise)
{
	uint32_t mask = field_mask(f, bitwise);

	for (unsigned w = f->word; w < f->word + f->nwords; w++)
		if ((st_get_le32(bank + w * ST_FUSE_WORD) & mask) !=
		    (st_get_le32(f->target + w * ST_FUSE_WORD) & mask))
			return false;
	return true;
}

/* Compare the field's words in bank with its target; why gets the words
 * an operator needs when the answer is not "burn" or "skip". */
static enum action classify(const st_fuse_field *f, const uint8_t bank[DRV_FUSE_BANK_LEN],
			    uint8_t faulty, bool bitwise, char *why, size_t whylen)
{
	uint32_t mask = field_mask(f, bitwise);
	unsigned same = 0, blank = 0, other = 0, down = 0, bad = 0;

	for (unsigned w = f->word; w < f->word + f->nwords; w++) {
		uint32_t cur = st_get_le32(bank + w * ST_FUSE_WORD) & mask;
		uint32_t tgt = st_get_le32(f->target + w * ST_FUSE_WORD) & mask;

		if (faulty & (1u << w)) {
			bad++;
			continue;
		}
		if (cur == tgt)
			same++;
		else if (!cur)
			blank++;
		else
			other++;
		if (cur & ~tgt)
			down++;
	}
	if (bad) {
		snprintf(why, whylen, "%u word(s) of bank %u are half-programmed (their "
			 "redundant copies disagree): an interrupted burn", bad, f->bank);
		return A_REFUSE;
	}
	if (same == f->nwords) {
		snprintf(why, whylen, "already holds the target");
		return A_SKIP;
	}
	if (blank == f->nwords) {
		snprintf(why, whylen, "blank");
		return A_BURN;
	}
	if (!other)
		snprintf(why, whylen, "partially burned: %u of %u words hold the target, "
			 "%u are blank (an interrupted burn)", same, f->nwords, blank);
	else if (down)
		snprintf(why, whylen, "holds a different value: a bit would have to go "
			 "1->0");
	else if (bitwise)
		snprintf(why, whylen, "holds a different value in its bits (a field "
			 "gets one value, never a second)");
	else
		snprintf(why, whylen, "holds a different value in an already programmed "
			 "word (a word is programmed only once)");
	return A_REFUSE;
}

__attribute__((format(printf, 2, 3)))
static void set_reason(st_fuse_run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 5, 0)))
static int vrecord(st_fuse_run *r, bool durable, st_step step,
		   st_outcome outcome, const char *fmt, va_list ap)
{
	char detail[512];

	vsnprintf(detail, sizeof(detail), fmt, ap);
	if (r->dry_run) {
		r->plan_line(r->ctx, detail);
		return 0;
	}
	return r->record(r->ctx, step, outcome, detail, durable);
}

/* A record that may ride along with the next durable one. */
__attribute__((format(printf, 4, 5)))
static int record(st_fuse_run *r, st_step step, st_outcome outcome,
		  const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vrecord(r, false, step, outcome, fmt, ap);
	va_end(ap);
	return rc;
}

/* Dry run: one field of the plan, as data when the front end takes it. */
__attribute__((format(printf, 6, 7)))
static int plan_row(st_fuse_run *r, const char *field, const char *cur,
		    const char *tgt, const char *action, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (r->plan_field)
		r->plan_field(r->ctx, field, cur, tgt, action, line);
	else
		r->plan_line(r->ctx, line);
	return 0;
}

/* A burn intent: on disk before the burn it announces. */
__attribute__((format(printf, 4, 5)))
static int record_intent(st_fuse_run *r, st_step step, st_outcome outcome,
			 const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vrecord(r, true, step, outcome, fmt, ap);
	va_end(ap);
	return rc;
}

/* The link was lost after an intent was recorded: what happened is
 * unknown until the device is read again, exactly as after a crash at the
 * same point, so it gets the same decision (docs/fuses.md, "Crash safety
 * and resume"): not QUARANTINE but an open intent.  Returns rc. */
__attribute__((format(printf, 3, 4)))
static int interrupted(st_fuse_run *r, int rc, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	set_reason(r, "interrupted: the link to the programmer was lost during %s "
		   "(%s) with its intent on record: not a conflict; re-plug the "
		   "unit and run it again: the next run reads the device and "
		   "completes, verifies or quarantines", what, drv_errmsg(r->dev));
	r->summary = ST_FUSES_INTERRUPTED;
	r->interrupted = true;
	return rc;
}

/* Measure and check the programming conditions; ST_OK to burn.  what
 * names what would have been burned, for the reason. */
static int check_conditions(st_fuse_run *r, const char *what)
{
	const st_fuse_plan *p = r->plan;
	drv_conditions c;
	int rc;

	if (drv_otp_is_nv(r->dev))
		return ST_OK;	/* write-once NV (a TPM): no programming window */
	if (drv_otp_self_timed(r->dev))
		return ST_OK;	/* the chip's own controller times the burn */
	rc = drv_get_conditions(r->dev, &c);
	if (rc) {
		set_reason(r, "%s: the programming conditions cannot be "
			   "read (%s)", what, drv_errmsg(r->dev));
		r->summary = ST_FUSES_CONDITIONS;
		return rc;
	}
	if (c.vpp_mv < p->vpp_min_mv || c.vpp_mv > p->vpp_max_mv ||
	    c.temp_dc < p->temp_min_dc || c.temp_dc > p->temp_max_dc) {
		set_reason(r, "%s: programming conditions out of the "
			   "profile's limits (vpp %d mV, allowed %d..%d; temperature "
			   "%.1f C, allowed %.1f..%.1f): check the programmer supply "
			   "and the fixture temperature, then provision the unit again",
			   what, c.vpp_mv, p->vpp_min_mv, p->vpp_max_mv,
			   c.temp_dc / 10.0, p->temp_min_dc / 10.0, p->temp_max_dc / 10.0);
		r->summary = ST_FUSES_CONDITIONS;
		return ST_E_STATE;
	}
	return ST_OK;
}

/* Was this field's burn intended by an interrupted earlier run? */
static bool pending(const st_fuse_run *r, const char *name)
{
	for (int i = 0; r->resume && i < r->resume->nintents; i++)
		if (!strcmp(r->resume->intent[i].field, name))
			return true;
	return false;
}

/* The lifecycle step: forward only, read back with IDENTIFY. */
static int run_lifecycle(st_fuse_run *r, const st_fuse_field *f)
{
	drv_info info;
	int rc;

	if (r->lifecycle == f->lifecycle && r->dry_run)
		return plan_row(r, "lifecycle", lc_names[r->lifecycle], lc_names[f->lifecycle],
				"skip", "lifecycle: current %s, target %s, action skip "
				"(already)", lc_names[r->lifecycle], lc_names[f->lifecycle]);
	if (r->lifecycle == f->lifecycle)
		return record(r, ST_STEP_LIFECYCLE, ST_OUTCOME_SKIP, "lifecycle: current %s, target %s, "
			      "action skip (already)", lc_names[r->lifecycle],
			      lc_names[f->lifecycle]);
	if (r->lifecycle > f->lifecycle) {
		set_reason(r, "lifecycle is %s, the plan wants %s (it never goes back): "
			   "unit quarantined", lc_names[r->lifecycle], lc_names[f->lifecycle]);
		r->quarantine = true;
		r->summary = ST_FUSES_CONFLICT;
		if (r->dry_run)
			return plan_row(r, "lifecycle", lc_names[r->lifecycle],
					lc_names[f->lifecycle], "refuse", "lifecycle: current "
					"%s, target %s, action refuse", lc_names[r->lifecycle],
					lc_names[f->lifecycle]);
		return ST_E_FUSE_CONFLICT;
	}
	if (r->dry_run)
		return plan_row(r, "lifecycle", lc_names[r->lifecycle], lc_names[f->lifecycle],
				"advance", "lifecycle: current %s, target %s, action advance "
				"(last)", lc_names[r->lifecycle], lc_names[f->lifecycle]);
	if ((rc = record_intent(r, ST_STEP_LIFECYCLE_INTENT, ST_OUTCOME_OK,
				"field %s lifecycle %s -> %s", f->name,
				lc_names[r->lifecycle], lc_names[f->lifecycle])))
		return rc;
	rc = drv_set_lifecycle(r->dev, f->lifecycle);
	if (!rc)
		rc = drv_identify(r->dev, &info);
	if (rc && st_err_is_link(rc))
		return interrupted(r, rc, "setting the lifecycle to %s", lc_names[f->lifecycle]);
	if (rc) {
		set_reason(r, "setting the lifecycle to %s failed: %s; the outcome is "
			   "unknown: unit quarantined", lc_names[f->lifecycle],
			   drv_errmsg(r->dev));
		r->quarantine = true;
		r->summary = ST_FUSES_BURN_FAILED;
		return rc;
	}
	if (info.lifecycle != f->lifecycle) {
		set_reason(r, "the lifecycle reads %u after setting %s: unit quarantined",
			   info.lifecycle, lc_names[f->lifecycle]);
		r->quarantine = true;
		r->summary = ST_FUSES_MISMATCH;
		return ST_E_FUSE_CONFLICT;
	}
	r->lifecycle = f->lifecycle;
	return record(r, ST_STEP_LIFECYCLE, ST_OUTCOME_OK, "lifecycle %s set and read back",
		      lc_names[f->lifecycle]);
}

/* Burn one blank field and verify it on a fresh read. */
static int burn_field(st_fuse_run *r, const st_fuse_field *f,
		      uint8_t bank[DRV_FUSE_BANK_LEN], const char *tgt_hex)
{
	uint8_t value[DRV_FUSE_BANK_LEN], back[DRV_FUSE_BANK_LEN], faulty = 0;
	unsigned off = f->word * ST_FUSE_WORD, len = f->nwords * ST_FUSE_WORD;
	bool bitwise = bitwise_bank(r->bitprog_banks, f);
	char cur_hex[65];
	uint32_t id;
	int rc;

	snprintf(cur_hex, sizeof(cur_hex), "field %s not burned", f->name);
	if ((rc = check_conditions(r, cur_hex)))
		return rc;
	if ((rc = r->request_id(r->ctx, &id))) {
		set_reason(r, "field %s not burned: no request id (HSM random failed)",
			   f->name);
		return rc;
	}
	/* The intent is durable before anything irreversible happens. */
	if ((rc = record_intent(r, ST_STEP_FUSE_INTENT, ST_OUTCOME_OK, "field %s bank %u "
				"words %u-%u <- %s request %08x", f->name, f->bank,
				f->word, f->word + f->nwords - 1, tgt_hex, id)))
		return rc;
	memcpy(value, bank, sizeof(value));
	if (bitwise) /* the bits burned so far stay, the field's are added */
		st_put_le32(value + off, st_get_le32(bank + off) |
			 (st_get_le32(f->target + off) & field_mask(f, true)));
	else
		memcpy(value + off, f->target + off, len);
	rc = drv_fuse_burn(r->dev, f->bank, value, id, back);
	/* The same state as a crash after the intent: the next presentation
	 * reads the device (write-once NV cannot be half-programmed; a fuse
	 * word can, and the read shows it: quarantine then). */
	if (rc && st_err_is_link(rc))
		return interrupted(r, rc, "burn of field %s (bank %u, request %08x)",
				   f->name, f->bank, id);
	if (rc) {
		set_reason(r, "burn of field %s (bank %u, request %08x) did not complete: "
			   "%s; the outcome is unknown: unit quarantined, do not burn it "
			   "again", f->name, f->bank, id, drv_errmsg(r->dev));
		r->quarantine = true;
		r->summary = ST_FUSES_BURN_FAILED;
		return rc == ST_E_FUSE_CONFLICT || !st_err_is_link(rc) ? ST_E_FUSE_CONFLICT : rc;
	}
	/* Trust only a fresh read with the word status, not the burn reply. */
	rc = drv_fuse_read_status(r->dev, f->bank, bank, &faulty);
	if (rc && st_err_is_link(rc))
		return interrupted(r, rc, "the read-back of field %s (bank %u, "
				   "request %08x)", f->name, f->bank, id);
	if (rc) {
		set_reason(r, "field %s was burned but could not be read back: %s; unit "
			   "quarantined until it is checked", f->name, drv_errmsg(r->dev));
		r->quarantine = true;
		r->summary = ST_FUSES_BURN_FAILED;
		return rc;
	}
	field_hex(f, bank, bitwise, cur_hex);
	if (!holds_target(f, bank, bitwise) || !holds_target(f, back, bitwise) ||
	    (faulty & (((1u << f->nwords) - 1) << f->word))) {
		set_reason(r, "field %s reads back %s (faulty words %02x) after the burn, "
			   "not %s: unit quarantined", f->name, cur_hex, faulty, tgt_hex);
		r->quarantine = true;
		r->summary = ST_FUSES_MISMATCH;
		return ST_E_FUSE_CONFLICT;
	}
	return record(r, ST_STEP_FUSE, ST_OUTCOME_OK, "field %s burned and read back: %s", f->name,
		      cur_hex);
}

/* Read field f and decide; link errors set the reason. */
static int check_field(st_fuse_run *r, const st_fuse_field *f,
		       uint8_t bank[DRV_FUSE_BANK_LEN], enum action *a,
		       char cur_hex[65], char tgt_hex[65], char *why, size_t whylen)
{
	uint8_t faulty = 0;
	int rc;

	if (f->bank >= r->banks) {
		set_reason(r, "fuse field %s is in bank %u but the target has %u fuse "
			   "banks: wrong profile for this model; nothing burned",
			   f->name, f->bank, r->banks);
		r->summary = ST_FUSES_CONFLICT;
		return ST_E_CONFIG;
	}
	rc = drv_fuse_read_status(r->dev, f->bank, bank, &faulty);
	if (rc) {
		set_reason(r, "reading fuse bank %u (field %s) failed: %s", f->bank,
			   f->name, drv_errmsg(r->dev));
		return rc;
	}
	if (!strcmp(f->source, "root_of_trust"))
		st_hex(bank, DRV_FUSE_BANK_LEN, r->readback_hex);
	field_hex(f, bank, bitwise_bank(r->bitprog_banks, f), cur_hex);
	field_hex(f, f->target, bitwise_bank(r->bitprog_banks, f), tgt_hex);
	*a = classify(f, bank, faulty, bitwise_bank(r->bitprog_banks, f), why, whylen);
	return ST_OK;
}

static void print_conditions(st_fuse_run *r)
{
	const st_fuse_plan *p = r->plan;
	drv_conditions c;

	if (drv_otp_is_nv(r->dev)) {
		record(r, ST_STEP_NONE, ST_OUTCOME_OK, "conditions: not applicable (write-once NV "
		       "storage, no programming window)");
		return;
	}
	if (drv_otp_self_timed(r->dev)) {
		record(r, ST_STEP_NONE, ST_OUTCOME_OK, "conditions: not measured (the "
		       "chip's own fuse controller makes the programming voltage and "
		       "timing)");
		return;
	}
	if (drv_get_conditions(r->dev, &c)) {
		record(r, ST_STEP_NONE, ST_OUTCOME_OK, "conditions: cannot be read (%s): nothing would be "
		       "burned", drv_errmsg(r->dev));
		return;
	}
	record(r, ST_STEP_NONE, ST_OUTCOME_OK, "conditions: vpp %d mV (allowed %d..%d), temperature "
	       "%.1f C (allowed %.1f..%.1f): %s", c.vpp_mv, p->vpp_min_mv,
	       p->vpp_max_mv, c.temp_dc / 10.0, p->temp_min_dc / 10.0,
	       p->temp_max_dc / 10.0,
	       c.vpp_mv < p->vpp_min_mv || c.vpp_mv > p->vpp_max_mv ||
	       c.temp_dc < p->temp_min_dc || c.temp_dc > p->temp_max_dc ?
	       "OUT OF RANGE, nothing would be burned" : "ok");
}

/* A locked device whose fuses cannot be read any more (an ESP32-C3 in
 * Secure Download Mode: docs/esp32.md, "End to end"), resumed after a run
 * that intended its lock for the identity now on it: the lock is the
 * plan's last step, intended only after every field was burned and read
 * back, so with no field's intent left open the plan is done.  true when
 * that is the case (recorded); false to read the fields as always. */
static bool locked_plan_done(st_fuse_run *r, int *rc)
{
	const st_fuse_field *first = NULL, *lc = NULL;
	uint8_t bank[DRV_FUSE_BANK_LEN], faulty = 0;

	*rc = ST_OK;
	if (r->dry_run || r->lifecycle != DRV_LC_LOCKED || !r->resume ||
	    !r->resume->lock_intended)
		return false;
	for (int i = 0; i < r->plan->n; i++) {
		const st_fuse_field *f = &r->plan->f[i];

		if (f->kind == ST_FUSE_LIFECYCLE)
			lc = f;
		else if (!first)
			first = f;
	}
	if (!first || !lc || lc->lifecycle != DRV_LC_LOCKED)
		return false;
	for (int i = 0; i < r->resume->nintents; i++)
		if (strcmp(r->resume->intent[i].field, lc->name))
			return false;
	if (first->bank >= r->banks ||
	    drv_fuse_read_status(r->dev, first->bank, bank, &faulty) != ST_E_LOCKED)
		return false;
	*rc = record(r, ST_STEP_FUSE_RESUME, ST_OUTCOME_OK, "lifecycle step %s: the "
		     "device is locked and refuses fuse reads (%s); the interrupted "
		     "run intended that lock, its plan's last step, after every "
		     "field was burned and read back: the plan is done, nothing "
		     "burned", lc->name, drv_errmsg(r->dev));
	return true;
}

/* Plan and check every field before anything burns: one field that
 * cannot be right quarantines the unit with nothing burned.  quiet: read
 * and decide only, recording nothing (st_fuse_check_plan).  *to_burn gets
 * the fields (and lifecycle step) still to do. */
static int check_plan(st_fuse_run *r, bool quiet, int *to_burn)
{
	uint8_t bank[DRV_FUSE_BANK_LEN];
	char cur_hex[65], tgt_hex[65], why[200];
	uint32_t unfit = r->plan->shared_banks & ~r->bitprog_banks;
	enum action a;
	int rc;

	*to_burn = 0;
	if (unfit) {
		unsigned b = (unsigned)__builtin_ctz(unfit);

		set_reason(r, "the fuse plan puts several fields into one word of bank "
			   "%u, but this target (driver %s) programs a word once, whole: "
			   "wrong profile for this model; nothing burned", b,
			   drv_driver_name(r->dev));
		r->summary = ST_FUSES_CONFLICT;
		return ST_E_CONFIG;
	}
	for (int i = 0; i < r->plan->n; i++) {
		const st_fuse_field *f = &r->plan->f[i];

		if (f->kind == ST_FUSE_LIFECYCLE) {
			if (!r->dry_run && !quiet && pending(r, f->name) &&
			    (rc = record(r, ST_STEP_FUSE_RESUME, ST_OUTCOME_OK, "lifecycle step %s had an "
					 "intent without outcome in the interrupted run; "
					 "the device reads %s: %s", f->name,
					 lc_names[r->lifecycle], r->lifecycle == f->lifecycle ?
					 "that step completed, verified" :
					 "that step did not happen; doing it now")))
				return rc;
			if (r->dry_run || r->lifecycle > f->lifecycle) {
				if ((rc = run_lifecycle(r, f)))
					return rc;
			} else if (r->lifecycle < f->lifecycle) {
				(*to_burn)++;
			}
			continue;
		}
		if ((rc = check_field(r, f, bank, &a, cur_hex, tgt_hex, why, sizeof(why))))
			return rc;
		if (r->dry_run) {
			plan_row(r, f->name, cur_hex, tgt_hex, action_names[a],
			       "field %s (%s, bank %u words %u-%u): current %s, "
			       "target %s, action %s%s%s", f->name, kind_names[f->kind],
			       f->bank, f->word, f->word + f->nwords - 1, cur_hex, tgt_hex,
			       action_names[a], a == A_REFUSE ? ": " : "",
			       a == A_REFUSE ? why : "");
			continue;
		}
		if (!quiet && pending(r, f->name) &&
		    (rc = record(r, ST_STEP_FUSE_RESUME, a == A_REFUSE ? ST_OUTCOME_FAIL : ST_OUTCOME_OK,
				 "field %s had an intent without outcome in the interrupted "
				 "run; the device reads %s: %s", f->name, cur_hex,
				 a == A_SKIP ? "that burn completed, verified, not repeated" :
				 a == A_BURN ? "that burn never happened; burning it now" :
				 why)))
			return rc;
		if (a == A_REFUSE) {
			set_reason(r, "fuse field %s (bank %u) %s: it reads %s, the profile "
				   "wants %s; unit quarantined with nothing burned, never "
				   "burned again without a supervisor's decision", f->name,
				   f->bank, why, cur_hex, tgt_hex);
			r->quarantine = true;
			r->summary = ST_FUSES_CONFLICT;
			return ST_E_FUSE_CONFLICT;
		}
		if (!quiet && a == A_SKIP &&
		    (rc = record(r, ST_STEP_FUSE, ST_OUTCOME_SKIP, "field %s already holds %s: "
				 "verified, not burned again", f->name, cur_hex)))
			return rc;
		*to_burn += a == A_BURN;
	}
	return ST_OK;
}

int st_fuse_check_plan(st_fuse_run *r, bool armed)
{
	int to_burn = 0, rc;

	r->summary = ST_FUSES_CHECKED;
	if (r->dry_run)
		return ST_E_INVAL;
	rc = check_plan(r, true, &to_burn);
	if (!rc && armed && to_burn)
		rc = check_conditions(r, "no fuse burned, no key or certificate issued");
	return rc;
}

int st_fuse_run_plan(st_fuse_run *r)
{
	int burned = 0, to_burn = 0, rc = ST_OK;
	uint8_t bank[DRV_FUSE_BANK_LEN];
	char cur_hex[65], tgt_hex[65], why[200];
	enum action a;

	r->summary = r->dry_run ? ST_FUSES_PLANNED : ST_FUSES_ALREADY;
	if (r->dry_run)
		print_conditions(r);
	if (locked_plan_done(r, &rc))
		return rc;
	if ((rc = check_plan(r, false, &to_burn)))
		return rc;
	if (r->dry_run || !to_burn)
		return ST_OK;
	if ((rc = check_conditions(r, "no fuse burned")))
		return rc;
	/* Burn in plan order, each field re-read just before its burn. */
	for (int i = 0; i < r->plan->n; i++) {
		const st_fuse_field *f = &r->plan->f[i];

		if (f->kind == ST_FUSE_LIFECYCLE) {
			if ((rc = run_lifecycle(r, f)))
				return rc;
			continue;
		}
		if ((rc = check_field(r, f, bank, &a, cur_hex, tgt_hex, why, sizeof(why))))
			return rc;
		if (a == A_SKIP)
			continue;
		if (a == A_REFUSE) {
			set_reason(r, "fuse field %s (bank %u) changed while the plan ran: %s "
				   "(reads %s): unit quarantined", f->name, f->bank, why, cur_hex);
			r->quarantine = true;
			r->summary = ST_FUSES_CONFLICT;
			return ST_E_FUSE_CONFLICT;
		}
		if ((rc = burn_field(r, f, bank, tgt_hex)))
			return rc;
		if (!strcmp(f->source, "root_of_trust"))
			st_hex(bank, DRV_FUSE_BANK_LEN, r->readback_hex);
		burned++;
	}
	if (burned)
		r->summary = ST_FUSES_BURNED;
	return ST_OK;
}

/* ---- showing a device's fuses (read only) ---- */

const char *st_fuse_state_name(st_fuse_state s)
{
	static const char *const names[] = {
		[ST_FUSE_BLANK] = "blank", [ST_FUSE_MATCHES] = "matches",
		[ST_FUSE_DIFFERS] = "differs", [ST_FUSE_LOCKED] = "locked",
	};

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* The lifecycle step's row: the device's state against the plan's. */
static void show_lifecycle(const st_fuse_field *f, uint8_t lc, st_fuse_row *r)
{
	const char *cur = lc < 3 ? lc_names[lc] : "unknown";

	r->bank = -1;
	snprintf(r->current, sizeof(r->current), "%s", cur);
	snprintf(r->target, sizeof(r->target), "%s", lc_names[f->lifecycle]);
	if (lc == f->lifecycle) {
		r->state = lc == DRV_LC_LOCKED ? ST_FUSE_LOCKED : ST_FUSE_MATCHES;
		r->action = "skip";
	} else if (lc < f->lifecycle) {
		r->state = ST_FUSE_BLANK;
		r->action = "advance";
	} else {
		r->state = lc == DRV_LC_LOCKED ? ST_FUSE_LOCKED : ST_FUSE_DIFFERS;
		r->action = "refuse";
		snprintf(r->why, sizeof(r->why), "the device is %s, past the plan's "
			 "%s: a lifecycle never goes back", cur, lc_names[f->lifecycle]);
	}
}

int st_fuses_show(const st_config *cfg, const st_profile *prof, const char *slot,
		  st_fuse_show *out, char *err, size_t errlen)
{
	const st_fuse_plan *plan = st_profile_fuse_plan(prof);
	drv_opts opts = { .timeout_ms = cfg->timeout_ms, .retries = cfg->retries,
			  .target_opts = st_profile_target_opts(prof) };
	drv_dev *dev = NULL;
	drv_info info;
	uint8_t bank[DRV_FUSE_BANK_LEN], faulty;
	int rc, i;

	memset(out, 0, sizeof(*out));
	rc = drv_open(slot, &opts, &dev);
	if (rc) {
		snprintf(err, errlen, "%s: programmer not usable: %s", slot,
			 dev ? drv_errmsg(dev) : st_strerror(rc));
		goto cleanup;
	}
	rc = drv_identify(dev, &info);
	if (rc) {
		snprintf(err, errlen, "%s: %s", slot, rc == ST_E_NO_TARGET ?
			 "no unit in the programmer: insert one" : drv_errmsg(dev));
		goto cleanup;
	}
	snprintf(out->uid, sizeof(out->uid), "%s", info.uid_hex);
	snprintf(out->model, sizeof(out->model), "%s", info.model);
	out->lifecycle = info.lifecycle < 3 ? lc_names[info.lifecycle] : "unknown";
	out->banks = info.fuse_banks;
	for (i = 0; i < plan->n && i < (int)(sizeof(out->row) / sizeof(out->row[0])); i++) {
		const st_fuse_field *f = &plan->f[i];
		st_fuse_row *r = &out->row[out->n++];

		snprintf(r->name, sizeof(r->name), "%s", f->name);
		r->kind = kind_names[f->kind];
		if (f->kind == ST_FUSE_LIFECYCLE) {
			show_lifecycle(f, info.lifecycle, r);
			continue;
		}
		r->bank = (int)f->bank;
		r->word_lo = f->word;
		r->word_hi = f->word + f->nwords - 1;
		field_hex(f, f->target, bitwise_bank(info.bitprog_banks, f), r->target);
		if (f->bank < 32 && (plan->shared_banks & ~info.bitprog_banks &
				     (1u << f->bank))) {
			snprintf(r->current, sizeof(r->current), "-");
			r->state = ST_FUSE_DIFFERS;
			r->action = "refuse";
			snprintf(r->why, sizeof(r->why), "the plan shares words of bank "
				 "%u between fields, but this target programs a word "
				 "once, whole: wrong profile for this model", f->bank);
			continue;
		}
		if (f->bank >= info.fuse_banks) {
			snprintf(r->current, sizeof(r->current), "-");
			r->state = ST_FUSE_DIFFERS;
			r->action = "refuse";
			snprintf(r->why, sizeof(r->why), "the target has %u fuse banks: "
				 "wrong profile for this model", info.fuse_banks);
			continue;
		}
		faulty = 0;
		rc = drv_fuse_read_status(dev, f->bank, bank, &faulty);
		if (rc) {
			snprintf(err, errlen, "%s: unit %s: reading fuse bank %u (field "
				 "%s) failed: %s", slot, info.uid_hex, f->bank, f->name,
				 drv_errmsg(dev));
			goto cleanup;
		}
		field_hex(f, bank, bitwise_bank(info.bitprog_banks, f), r->current);
		switch (classify(f, bank, faulty, bitwise_bank(info.bitprog_banks, f),
				 r->why, sizeof(r->why))) {
		case A_SKIP:
			r->state = f->kind == ST_FUSE_WRITE_PROTECT ? ST_FUSE_LOCKED :
				   ST_FUSE_MATCHES;
			r->action = "skip";
			r->why[0] = '\0';
			break;
		case A_BURN:
			r->state = ST_FUSE_BLANK;
			r->action = "burn";
			r->why[0] = '\0';
			break;
		case A_REFUSE:
			r->state = ST_FUSE_DIFFERS;
			r->action = "refuse";
			break;
		}
	}
	rc = ST_OK;
cleanup:
	drv_close(dev);
	return rc;
}

/* label.c — the label of a unit that passed (docs/integration.md,
 * "Labels"): a QR code carrying the UID, the certificate serial and its
 * SHA-256 fingerprint in one compact text, plus the same in words beneath.
 * One drawing (cairo) is rendered twice: to an image written as PNG
 * (libpng, for its tEXt chunks: the words for whoever reads the file) and
 * to a PDF page; the ZPL (^BQ, for the common thermal printers) is text.
 * All go to labels.dir, and the ZPL is sent raw to a CUPS queue
 * (`lp [-h labels.server] -d labels.queue -o raw`) when one is set. */
#include <cairo.h>
#include <cairo-pdf.h>
#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <qrencode.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "station/st_int.h"

#define LBL_QUIET 4    /* modules of white around the code (ISO 18004) */
#define LBL_FONT 13.0  /* text size, drawing units, at module size 6 */
#define LBL_LINE 17.0  /* text line pitch, likewise */
#define LBL_MAX_LINES (2 * ST_LABEL_LINES)  /* a fingerprint takes two */
#define LBL_PDF_PT 0.5 /* PDF points per drawing unit (144 units an inch) */

/* The template without a profile's label group. */
static const st_label_tpl default_tpl = {
	.nlines = 3, .line = { "uid", "serial", "fingerprint" }, .module = 6,
};

extern char **environ;

int st_label_payload(const char *uid, const char *serial, const char *fp,
		     char *out, size_t len)
{
	int n;

	if (!uid || !serial || !fp || !uid[0] || !serial[0] || !fp[0])
		return ST_E_INVAL;
	n = snprintf(out, len, "ST1;UID=%s;SN=%s;FP=%s", uid, serial, fp);
	return n < 0 || (size_t)n >= len ? ST_E_INVAL : ST_OK;
}

/* Write the file at path whole: a temporary beside it, fsync, rename. */
static int put_file(const char *path, int (*fill)(FILE *f, void *ctx),
		    void *ctx)
{
	char tmp[4200];
	FILE *f;
	int rc;

	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	f = fopen(tmp, "wbx");
	if (!f)
		return ST_E_IO;
	rc = fill(f, ctx);
	if (fflush(f) || fsync(fileno(f)))
		rc = ST_E_IO;
	if (fclose(f))
		rc = ST_E_IO;
	if (!rc && rename(tmp, path))
		rc = ST_E_IO;
	if (rc)
		unlink(tmp);
	return rc;
}

struct lbl {
	const char *uid, *serial, *fp, *payload;
	QRcode *qr;
	int module;                     /* drawing units a QR module */
	int ntext;
	char text[LBL_MAX_LINES][144];  /* the template's lines, in words */
};

/* The template's lines as the label shows them. */
static void label_text(struct lbl *l, const st_label_tpl *t)
{
	for (int i = 0; i < t->nlines && l->ntext < LBL_MAX_LINES - 1; i++) {
		char (*o)[144] = &l->text[l->ntext];

		if (!strcmp(t->line[i], "uid")) {
			snprintf(*o, sizeof(*o), "UID %s", l->uid);
		} else if (!strcmp(t->line[i], "serial")) {
			snprintf(*o, sizeof(*o), "SN  %s", l->serial);
		} else if (!strcmp(t->line[i], "fingerprint")) {
			snprintf(*o, sizeof(*o), "FP  %.32s", l->fp);
			snprintf(o[1], sizeof(*o), "    %s", strlen(l->fp) > 32 ? l->fp + 32 : "");
			l->ntext++;
		} else if (!strcmp(t->line[i], "profile")) {
			snprintf(*o, sizeof(*o), "%s", t->profile);
		} else if (!strncmp(t->line[i], "text:", 5)) {
			snprintf(*o, sizeof(*o), "%s", t->line[i] + 5);
		} else {
			continue;   /* the profile's load refused it already */
		}
		l->ntext++;
	}
}

/* The label's size in drawing units: the code with its quiet zone, then
 * the words beneath. */
static int label_w(const struct lbl *l)
{
	return (l->qr->width + 2 * LBL_QUIET) * l->module;
}

static int label_h(const struct lbl *l)
{
	return label_w(l) + (int)((l->ntext + 0.5) * LBL_LINE * l->module / 6.0);
}

/* The one drawing of the label, in drawing units (a PNG pixel; half a
 * point in the PDF): white ground, the QR code's dark modules as squares
 * (not smoothed: a scanner wants hard edges), then the template's lines
 * (by default the UID, the serial and the fingerprint in two halves) in a
 * monospace face. */
static void draw_label(cairo_t *cr, const struct lbl *l)
{
	int w = l->qr->width, side = label_w(l), m = l->module;
	double pitch = LBL_LINE * m / 6.0;

	cairo_set_source_rgb(cr, 1, 1, 1);
	cairo_paint(cr);
	cairo_set_source_rgb(cr, 0, 0, 0);
	cairo_save(cr);
	cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
	for (int y = 0; y < w; y++)
		for (int x = 0; x < w; x++)
			if (l->qr->data[y * w + x] & 1)
				cairo_rectangle(cr, (x + LBL_QUIET) * m, (y + LBL_QUIET) * m,
						m, m);
	cairo_fill(cr);
	cairo_restore(cr);
	cairo_select_font_face(cr, "monospace", CAIRO_FONT_SLANT_NORMAL,
			       CAIRO_FONT_WEIGHT_NORMAL);
	cairo_set_font_size(cr, LBL_FONT * m / 6.0);
	for (int i = 0; i < l->ntext; i++) {
		cairo_move_to(cr, LBL_QUIET * m / 2.0, side + pitch * (i + 0.5));
		cairo_show_text(cr, l->text[i]);
	}
}

/* The drawing on an image, written as an 8-bit grey PNG with the words in
 * its tEXt chunks. */
static int fill_png(FILE *f, void *ctx)
{
	struct lbl *l = ctx;
	int w = label_w(l), h = label_h(l), stride;
	cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
	cairo_t *cr = NULL;
	png_structp p = NULL;
	png_infop info = NULL;
	png_bytep row = malloc((size_t)w);
	const unsigned char *data;
	png_text text[4];
	int rc = ST_E_IO;

	if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS || !row) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	cr = cairo_create(img);
	draw_label(cr, l);
	if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
		goto cleanup;
	cairo_surface_flush(img);
	data = cairo_image_surface_get_data(img);
	stride = cairo_image_surface_get_stride(img);
	p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	info = p ? png_create_info_struct(p) : NULL;
	if (!p || !info) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (setjmp(png_jmpbuf(p)))
		goto cleanup;
	png_init_io(p, f);
	png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY,
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
		     PNG_FILTER_TYPE_DEFAULT);
	/* the words of the label, for whoever reads the file, not the code */
	memset(text, 0, sizeof(text));
	text[0] = (png_text){ .compression = PNG_TEXT_COMPRESSION_NONE,
			      .key = "Title", .text = (char *)l->uid };
	text[1] = (png_text){ .compression = PNG_TEXT_COMPRESSION_NONE,
			      .key = "Serial", .text = (char *)l->serial };
	text[2] = (png_text){ .compression = PNG_TEXT_COMPRESSION_NONE,
			      .key = "Fingerprint", .text = (char *)l->fp };
	text[3] = (png_text){ .compression = PNG_TEXT_COMPRESSION_NONE,
			      .key = "Comment", .text = (char *)l->payload };
	png_set_text(p, info, text, 4);
	png_write_info(p, info);
	for (int y = 0; y < h; y++) {
		const uint32_t *px = (const uint32_t *)(const void *)(data + (size_t)y * (size_t)stride);

		/* black on white: any channel is the grey level */
		for (int x = 0; x < w; x++)
			row[x] = (png_byte)((px[x] >> 8) & 0xff);
		png_write_row(p, row);
	}
	png_write_end(p, NULL);
	rc = ST_OK;
cleanup:
	if (p)
		png_destroy_write_struct(&p, info ? &info : NULL);
	if (cr)
		cairo_destroy(cr);
	cairo_surface_destroy(img);
	free(row);
	return rc;
}

static cairo_status_t pdf_out(void *ctx, const unsigned char *data, unsigned int len)
{
	return fwrite(data, 1, len, ctx) == len ? CAIRO_STATUS_SUCCESS :
						  CAIRO_STATUS_WRITE_ERROR;
}

/* The same drawing on one PDF page (LBL_PDF_PT points a unit), the words
 * also in its metadata (title: the UID; subject: the QR text). */
static int fill_pdf(FILE *f, void *ctx)
{
	struct lbl *l = ctx;
	cairo_surface_t *pdf = cairo_pdf_surface_create_for_stream(pdf_out, f,
		label_w(l) * LBL_PDF_PT, label_h(l) * LBL_PDF_PT);
	cairo_t *cr;
	int rc;

	cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_TITLE, l->uid);
	cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_SUBJECT, l->payload);
	cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_CREATOR, "station");
	cr = cairo_create(pdf);
	cairo_scale(cr, LBL_PDF_PT, LBL_PDF_PT);
	draw_label(cr, l);
	cairo_show_page(cr);
	rc = cairo_status(cr) == CAIRO_STATUS_SUCCESS ? ST_OK : ST_E_IO;
	cairo_destroy(cr);
	cairo_surface_finish(pdf);
	if (cairo_surface_status(pdf) != CAIRO_STATUS_SUCCESS)
		rc = ST_E_IO;
	cairo_surface_destroy(pdf);
	return rc;
}

/* ZPL II: a QR code (model 2, error correction M, automatic input: "MA,"
 * before the data; magnification from the template's module size) and
 * the template's lines beneath. */
static int fill_zpl(FILE *f, void *ctx)
{
	struct lbl *l = ctx;
	int mag = l->module - 1 < 1 ? 1 : l->module - 1 > 10 ? 10 : l->module - 1;
	int y = 30 + (l->qr->width + 4) * mag + 35;

	fprintf(f, "^XA\n^CI28\n^FO40,30^BQN,2,%d^FDMA,%s^FS\n", mag, l->payload);
	for (int i = 0; i < l->ntext; i++, y += 30)
		fprintf(f, "^FO40,%d^A0N,24,24^FD%s^FS\n", y, l->text[i]);
	fprintf(f, "^XZ\n");
	return ferror(f) ? ST_E_IO : ST_OK;
}

/* `lp [-h server] -d queue -o raw file` without a shell; ST_E_IO unless it
 * exits 0. */
static int send_lp(const char *server, const char *queue, const char *file,
		   char *err, size_t errlen)
{
	const char *argv[12];
	posix_spawn_file_actions_t fa;
	int n = 0;
	int status, rc;
	pid_t pid;

	argv[n++] = "lp";
	if (server) {
		argv[n++] = "-h";
		argv[n++] = server;
	}
	argv[n++] = "-d";
	argv[n++] = queue;
	argv[n++] = "-o";
	argv[n++] = "raw";
	argv[n++] = "--";
	argv[n++] = file;
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, "lp", &fa, NULL, (char **)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc) {
		snprintf(err, errlen, "cannot run lp (%s): install cups-client or "
			 "unset labels.queue", strerror(rc));
		return ST_E_IO;
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		snprintf(err, errlen, "lp%s%s -d %s did not take %s (exit %d): check "
			 "the queue with lpstat%s%s -p %s", server ? " -h " : "",
			 server ? server : "", queue, file,
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1,
			 server ? " -h " : "", server ? server : "", queue);
		return ST_E_IO;
	}
	return ST_OK;
}

int st_label_write(const st_config *cfg, const st_label_tpl *tpl, const char *uid,
		   const char *serial, const char *fp, st_label_files *out,
		   char *err, size_t errlen)
{
	char payload[512];
	struct lbl *l = NULL;
	const char *what = "PNG";
	int rc;

	memset(out, 0, sizeof(*out));
	if (!cfg->labels_dir) {
		snprintf(err, errlen, "labels.dir is not set in the configuration: "
			 "name the folder labels go to");
		return ST_E_CONFIG;
	}
	if (st_label_payload(uid, serial, fp, payload, sizeof(payload))) {
		snprintf(err, errlen, "unit %s has no certificate serial and "
			 "fingerprint to label", uid ? uid : "?");
		return ST_E_INVAL;
	}
	if (mkdir(cfg->labels_dir, 0755) && errno != EEXIST) {
		snprintf(err, errlen, "cannot make the labels folder %s (%s)",
			 cfg->labels_dir, strerror(errno));
		return ST_E_IO;
	}
	if (!tpl)
		tpl = &default_tpl;
	l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	*l = (struct lbl){ .uid = uid, .serial = serial, .fp = fp, .payload = payload,
			   .module = tpl->module };
	label_text(l, tpl);
	l->qr = QRcode_encodeString(payload, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	if (!l->qr) {
		snprintf(err, errlen, "unit %s: the QR code could not be made (%s)",
			 uid, strerror(errno));
		free(l);
		return ST_E_NOMEM;
	}
	snprintf(out->png, sizeof(out->png), "%s/%s.png", cfg->labels_dir, uid);
	snprintf(out->pdf, sizeof(out->pdf), "%s/%s.pdf", cfg->labels_dir, uid);
	snprintf(out->zpl, sizeof(out->zpl), "%s/%s.zpl", cfg->labels_dir, uid);
	errno = 0;
	rc = put_file(out->png, fill_png, l);
	if (!rc) {
		what = "PDF";
		rc = put_file(out->pdf, fill_pdf, l);
	}
	if (!rc) {
		what = "ZPL";
		rc = put_file(out->zpl, fill_zpl, l);
	}
	QRcode_free(l->qr);
	free(l);
	if (rc) {
		snprintf(err, errlen, "unit %s: cannot write its %s label in %s (%s)",
			 uid, what, cfg->labels_dir, errno ? strerror(errno) :
			 "the drawing failed");
		return rc;
	}
	if (cfg->labels_queue)
		return send_lp(cfg->labels_server, cfg->labels_queue, out->zpl, err,
			       errlen);
	return ST_OK;
}

struct pass_row {
	char serial[128], fp[80];
};

static int pass_fields(void *ctx, const rec_unit_row *u)
{
	struct pass_row *p = ctx;

	snprintf(p->serial, sizeof(p->serial), "%s", u->cert_serial ? u->cert_serial : "");
	snprintf(p->fp, sizeof(p->fp), "%s", u->cert_sha256 ? u->cert_sha256 : "");
	return 0;
}

int st_label_print(st_station *st, const char *uid, st_label_files *out,
		   char *err, size_t errlen)
{
	const st_config *cfg = st_station_config(st);
	struct pass_row p = { "", "" };
	rec_filter f = { 0 };
	st_profile *prof = NULL;
	st_signed_info info;
	rec_store *r;
	int64_t id;
	int rc;

	rc = st_station_records_for(st, ST_STORE_READ, &r, err, errlen);
	if (rc)
		return rc;
	rc = rec_find_pass(r, uid, &id);
	if (rc == ST_E_NOTFOUND) {
		snprintf(err, errlen, "device %s never passed at this station: only "
			 "a PASS unit gets a label (station records list --uid %s)",
			 uid, uid);
		return ST_E_NOTFOUND;
	}
	f.unit_id = id;
	if (rc || (rc = rec_list_units(r, &f, pass_fields, &p))) {
		snprintf(err, errlen, "records: %s", rec_errmsg(r));
		return ST_E_DB;
	}
	/* the template is the signed profile's, as a run takes it */
	if (cfg->profile_path) {
		char why[900];

		rc = st_profile_load_signed(cfg, cfg->profile_path, &prof, &info, why,
					    sizeof(why));
		if (rc) {
			snprintf(err, errlen, "the label template is the profile's: %s",
				 why);
			return rc;
		}
	}
	rc = st_label_write(cfg, prof ? st_profile_label(prof) : NULL, uid, p.serial,
			    p.fp, out, err, errlen);
	st_profile_free(prof);
	return rc;
}

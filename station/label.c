/* label.c — the label of a unit that passed (docs/integration.md,
 * "Labels"): a QR code carrying the UID, the certificate serial and its
 * SHA-256 fingerprint in one compact text, plus the same in words; written
 * as PNG (libpng; the words in its tEXt chunks) and ZPL (^BQ, for the
 * common thermal printers) to labels.dir, and the ZPL sent raw to a CUPS
 * queue (`lp -d labels.queue -o raw`) when one is configured. */
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

#define LBL_SCALE 6    /* pixels per QR module */
#define LBL_QUIET 4    /* modules of white around the code (ISO 18004) */

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
};

static int fill_png(FILE *f, void *ctx)
{
	struct lbl *l = ctx;
	int side = (l->qr->width + 2 * LBL_QUIET) * LBL_SCALE;
	png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL,
						NULL, NULL);
	png_infop info = p ? png_create_info_struct(p) : NULL;
	png_bytep row = malloc((size_t)side);
	png_text text[4];
	int rc = ST_E_IO;

	if (!p || !info || !row) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (setjmp(png_jmpbuf(p)))
		goto cleanup;
	png_init_io(p, f);
	png_set_IHDR(p, info, (png_uint_32)side, (png_uint_32)side, 8,
		     PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
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
	for (int y = 0; y < side; y++) {
		int my = y / LBL_SCALE - LBL_QUIET;

		for (int x = 0; x < side; x++) {
			int mx = x / LBL_SCALE - LBL_QUIET;
			bool dark = mx >= 0 && my >= 0 && mx < l->qr->width &&
				    my < l->qr->width &&
				    (l->qr->data[my * l->qr->width + mx] & 1);

			row[x] = dark ? 0 : 255;
		}
		png_write_row(p, row);
	}
	png_write_end(p, NULL);
	rc = ST_OK;
cleanup:
	png_destroy_write_struct(p ? &p : NULL, info ? &info : NULL);
	free(row);
	return rc;
}

/* ZPL II: a QR code (model 2, magnification 5, error correction M,
 * automatic input: "MA," before the data) and the words beneath. */
static int fill_zpl(FILE *f, void *ctx)
{
	struct lbl *l = ctx;

	fprintf(f, "^XA\n^CI28\n"
		"^FO40,30^BQN,2,5^FDMA,%s^FS\n"
		"^FO40,330^A0N,30,30^FDUID %s^FS\n"
		"^FO40,370^A0N,26,26^FDSN %s^FS\n"
		"^FO40,405^A0N,22,22^FDSHA-256 %.32s^FS\n"
		"^FO40,432^A0N,22,22^FD        %s^FS\n"
		"^XZ\n", l->payload, l->uid, l->serial, l->fp,
		strlen(l->fp) > 32 ? l->fp + 32 : "");
	return ferror(f) ? ST_E_IO : ST_OK;
}

/* `lp -d queue -o raw file` without a shell; ST_E_IO unless it exits 0. */
static int send_lp(const char *queue, const char *file, char *err, size_t errlen)
{
	const char *argv[] = { "lp", "-d", queue, "-o", "raw", "--", file, NULL };
	posix_spawn_file_actions_t fa;
	int status, rc;
	pid_t pid;

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
		snprintf(err, errlen, "lp -d %s did not take %s (exit %d): check the "
			 "queue with lpstat -p %s", queue, file,
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, queue);
		return ST_E_IO;
	}
	return ST_OK;
}

int st_label_write(const st_config *cfg, const char *uid, const char *serial,
		   const char *fp, char *png_path, char *zpl_path, size_t len,
		   char *err, size_t errlen)
{
	char payload[512];
	struct lbl l = { .uid = uid, .serial = serial, .fp = fp, .payload = payload };
	int rc;

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
	l.qr = QRcode_encodeString(payload, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	if (!l.qr) {
		snprintf(err, errlen, "unit %s: the QR code could not be made (%s)",
			 uid, strerror(errno));
		return ST_E_NOMEM;
	}
	snprintf(png_path, len, "%s/%s.png", cfg->labels_dir, uid);
	snprintf(zpl_path, len, "%s/%s.zpl", cfg->labels_dir, uid);
	rc = put_file(png_path, fill_png, &l);
	if (!rc)
		rc = put_file(zpl_path, fill_zpl, &l);
	QRcode_free(l.qr);
	if (rc) {
		snprintf(err, errlen, "unit %s: cannot write its label in %s (%s)",
			 uid, cfg->labels_dir, strerror(errno));
		return rc;
	}
	if (cfg->labels_queue)
		return send_lp(cfg->labels_queue, zpl_path, err, errlen);
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

int st_label_print(st_station *st, const char *uid, char *png_path,
		   char *zpl_path, size_t len, char *err, size_t errlen)
{
	struct pass_row p = { "", "" };
	rec_filter f = { 0 };
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
	return st_label_write(st_station_config(st), uid, p.serial, p.fp,
			      png_path, zpl_path, len, err, errlen);
}

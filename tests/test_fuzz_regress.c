/* test_fuzz_regress.c — every input the protocol fuzzer ever needed (crash
 * reproducers in tests/fuzz/regress/) and its seed corpus, replayed through
 * the same harness under the normal and sanitizer builds, so a fixed decoder
 * bug stays fixed. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_proto.h"

static int replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;

	cr_assert_not_null(d, "cannot open %s (run tests from the source tree)", dir);
	for (struct dirent *e; (e = readdir(d));) {
		char p[1024];
		unsigned char *buf;
		long len;
		FILE *f;

		if (e->d_name[0] == '.' || !strcmp(e->d_name, "README"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		f = fopen(p, "rb");
		cr_assert_not_null(f, "%s", p);
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		buf = malloc(len > 0 ? (size_t)len : 1);
		cr_assert_not_null(buf);
		cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
		fclose(f);
		fuzz_proto_one(buf, (size_t)len);
		free(buf);
		n++;
	}
	closedir(d);
	return n;
}

Test(fuzz, regression_inputs_replay_clean)
{
	cr_assert_gt(replay_dir("tests/fuzz/regress"), 0, "no regression inputs");
}

Test(fuzz, seed_corpus_replays_clean)
{
	cr_assert_gt(replay_dir("tests/fuzz/seeds"), 0, "no seeds");
}

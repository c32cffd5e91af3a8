/* fuzz_proto.h — one fuzz input through the protocol's decoders. */
#ifndef FUZZ_PROTO_H
#define FUZZ_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Run one input: byte 0 picks the target, the rest is its data.
 *   even: raw line bytes through the receiver and frame decoder (every
 *         good frame must re-encode to the same frame);
 *   odd:  a reply payload for command (byte 0 >> 1) % 11 + 1, wrapped in a
 *         valid frame with the right seq, through the client's typed reply
 *         parsing (proto_hello, proto_identify, ...).
 * Aborts on a broken invariant; the sanitizers catch the rest.  Used by
 * libFuzzer (fuzz_main.c, `make fuzz`) and by tests/test_fuzz_regress.c,
 * which replays every input kept in tests/fuzz/regress/. */
void fuzz_proto_one(const uint8_t *data, size_t size);

#endif

/* fuzz_main.c — libFuzzer entry point for fuzz_proto_one (`make fuzz`). */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_proto_one(data, size);
	return 0;
}

/*
 * fuzz_spec.c: libFuzzer target for the spec parser and validator, which take untrusted
 * input through `dbplane apply` (the API's request body). Any crash, leak, or sanitizer
 * report is a bug; diagnostics for malformed input are the expected outcome.
 */
#include <stddef.h>
#include <stdint.h>

#include "spec/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spec_set_t set;
    spec_diags_t d;
    spec_set_init(&set);
    spec_diags_init(&d);
    if (spec_parse_buffer(&set, "<fuzz>", (const char *)data, size, &d) == 0) {
        int rc = spec_validate(&set, NULL, &d);
        (void)rc;
    }
    spec_diags_free(&d);
    spec_set_free(&set);
    return 0;
}

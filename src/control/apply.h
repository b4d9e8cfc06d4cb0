/*
 * apply.h: writing a validated set of resources into the store as desired state, the one
 * path shared by `dbplane up -f` and the API's apply. Secret values are encrypted into the
 * secret store first and the stored documents carry only their fingerprints, so no
 * plaintext value ever reaches state.db. All or nothing: one store transaction.
 */
#ifndef DBP_CONTROL_APPLY_H
#define DBP_CONTROL_APPLY_H

#include <jansson.h>

#include "common/err.h"
#include "secrets/secrets.h"
#include "spec/spec.h"
#include "store/store.h"

/* Stores every resource of `set` (validated by the caller). On success *applied (may be
 * NULL) receives an owned JSON array of {kind, tenant, name, generation, changed}. On
 * failure nothing is changed. */
int ctl_apply_set(store_t *st, secrets_t *sec, const spec_set_t *set, json_t **applied,
                  dbp_err_t *err) __attribute__((warn_unused_result));

#endif

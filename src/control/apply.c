/*
 * apply.c: desired state into the store (see apply.h).
 */
#include "control/apply.h"

#include <stdlib.h>

#include "common/log.h"

int ctl_apply_set(store_t *st, secrets_t *sec, const spec_set_t *set, json_t **applied,
                  dbp_err_t *err)
{
    json_t *out = json_array();
    if (!out)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    int rc = store_begin(st, err);
    if (rc) {
        json_decref(out);
        return rc;
    }
    for (size_t i = 0; i < set->n && rc == 0; i++) {
        const spec_resource_t *r = set->items[i];
        if (r->kind == SPEC_KIND_SECRET) {
            int changed = 0;
            rc = secrets_apply(sec, r, &changed, err);
            if (rc)
                break;
        }
        json_t *doc = secrets_redact_json(sec, r);
        char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(doc);
        if (!text) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            break;
        }
        int64_t gen = 0;
        bool changed = false;
        rc = store_put_resource(st, r->tenant.v, spec_kind_str(r->kind), r->name.v, text, &gen,
                                &changed, err);
        free(text);
        if (rc)
            break;
        if (changed)
            dbp_info("resource_applied", "tenant=%s kind=%s name=%s generation=%lld",
                     r->tenant.v, spec_kind_str(r->kind), r->name.v, (long long)gen);
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:I,s:b}", "kind",
                                             spec_kind_str(r->kind), "tenant", r->tenant.v,
                                             "name", r->name.v, "generation", (json_int_t)gen,
                                             "changed", changed));
    }
    if (rc) {
        store_rollback(st);
        json_decref(out);
        return rc;
    }
    rc = store_commit(st, err);
    if (rc) {
        json_decref(out);
        return rc;
    }
    if (applied)
        *applied = out;
    else
        json_decref(out);
    return 0;
}

/*
 * mariadb_restart.c: the MariaDB driver's needs_restart (rolling changes, issue 6).
 *
 * mariadbd never re-reads its option file; render_config applies a changed my.cnf to the
 * running server with SET GLOBAL (mdb_apply_running), which works for dynamic variables
 * only. What a running server cannot take is a read-only system variable
 * (information_schema.SYSTEM_VARIABLES.READ_ONLY = 'YES',
 * https://mariadb.com/kb/en/information-schema-system_variables-table/), so a restart is
 * pending when:
 *   - my.cnf was written after the server started (Uptime), and
 *   - a read-only variable's running GLOBAL_VALUE differs from the value my.cnf sets
 *     (sizes with K/M/G/T suffixes, booleans and paths normalised; numbers clamped to
 *     NUMERIC_MIN/MAX_VALUE and rounded down to NUMERIC_BLOCK_SIZE as mariadbd does), or
 *   - a read-only variable was set from the option file at start
 *     (GLOBAL_VALUE_ORIGIN = 'CONFIG') and my.cnf no longer sets it, while its value is
 *     not the default.
 * The file-age check keeps a server started with the current file from ever reading as
 * pending (no restart loop on a value mariadbd adjusts at start, e.g. open_files_limit).
 * Options that are not system variables (plugin loading and the like) are not compared.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/log.h"
#include "engines/mariadb_int.h"

#define MDB_RESTART_MAX_OPTS 256

/* One option of my.cnf, name normalised (lower case, '_'), value unquoted. */
typedef struct mdb_opt {
    char name[96];
    char value[256];
} mdb_opt_t;

/* Reads the [mariadbd] options of the rendered my.cnf (the format mariadb.c writes:
 * "key = value" or "key = \"quoted\""). Returns the count, or a negative DBP_E* code. */
static int mdb_read_opts(const char *path, mdb_opt_t *opts, int max, dbp_err_t *err)
{
    char *text = NULL;
    int rc = dbp_read_file(path, &text, NULL, err);
    if (rc)
        return rc;
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        while (isspace((unsigned char)*line))
            line++;
        if (!*line || *line == '#' || *line == ';' || *line == '[')
            continue;
        char *eq = strchr(line, '=');
        char *kend = eq ? eq : line + strlen(line);
        while (kend > line && isspace((unsigned char)kend[-1]))
            kend--;
        mdb_opt_t *o = &opts[n];
        size_t k = 0;
        for (char *p = line; p < kend && k + 1 < sizeof(o->name); p++)
            o->name[k++] = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
        o->name[k] = '\0';
        const char *v = eq ? eq + 1 : "ON"; /* a bare flag means ON */
        while (isspace((unsigned char)*v))
            v++;
        size_t o2 = 0;
        if (*v == '"') {
            for (v++; *v && *v != '"' && o2 + 1 < sizeof(o->value); v++) {
                if (*v == '\\' && v[1])
                    v++;
                o->value[o2++] = *v;
            }
        } else {
            for (; *v && o2 + 1 < sizeof(o->value); v++)
                o->value[o2++] = *v;
            while (o2 > 0 && isspace((unsigned char)o->value[o2 - 1]))
                o2--;
        }
        o->value[o2] = '\0';
        /* loose_X is X; skip_X / disable_X is X = OFF and enable_X is X = ON, unless X
         * with the prefix is itself a variable (skip_name_resolve): both forms are kept. */
        n++;
        const char *base = NULL, *bval = NULL;
        if (strncmp(o->name, "loose_", 6) == 0)
            base = o->name + 6, bval = o->value;
        else if (strncmp(o->name, "skip_", 5) == 0)
            base = o->name + 5, bval = "OFF";
        else if (strncmp(o->name, "disable_", 8) == 0)
            base = o->name + 8, bval = "OFF";
        else if (strncmp(o->name, "enable_", 7) == 0)
            base = o->name + 7, bval = "ON";
        if (base && n < max) {
            snprintf(opts[n].name, sizeof(opts[n].name), "%s", base);
            snprintf(opts[n].value, sizeof(opts[n].value), "%s", bval);
            n++;
        }
    }
    free(text);
    return n;
}

/* The last value my.cnf gives option `name` (lower case), or NULL. */
static const char *mdb_opt_get(const mdb_opt_t *opts, int n, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0)
            v = opts[i].value;
    return v;
}

/* A number as mariadbd reads it from an option file: an integer with an optional
 * K/M/G/T/P/E suffix (powers of 1024). False when `s` is not one. */
static bool mdb_parse_size(const char *s, long double *out)
{
    char *end;
    errno = 0;
    long double v = strtold(s, &end);
    if (end == s || errno)
        return false;
    static const char suffixes[] = "KMGTPE";
    if (*end) {
        const char *p = strchr(suffixes, toupper((unsigned char)*end));
        if (!p || end[1])
            return false;
        for (long i = 0; i <= p - suffixes; i++)
            v *= 1024.0L;
    }
    *out = v;
    return true;
}

/* ON/OFF for the ways an option file spells a boolean; NULL when `s` is none of them. */
static const char *mdb_bool(const char *s)
{
    static const char *const on[] = {"1", "on", "true", "yes", NULL};
    static const char *const off[] = {"0", "off", "false", "no", NULL};
    for (int i = 0; on[i]; i++) {
        if (strcasecmp(s, on[i]) == 0)
            return "ON";
        if (strcasecmp(s, off[i]) == 0)
            return "OFF";
    }
    return NULL;
}

/* Whether the running value `cur` of a variable of VARIABLE_TYPE `type` is what the
 * option value `want` gives at a start (min/max/block from SYSTEM_VARIABLES, may be
 * NULL). */
static bool mdb_value_same(const char *type, const char *cur, const char *want, const char *min,
                           const char *max, const char *block)
{
    if (!cur)
        cur = "";
    if (strcasecmp(type, "BOOLEAN") == 0) {
        const char *a = mdb_bool(cur), *b = mdb_bool(want);
        return a && b ? strcmp(a, b) == 0 : strcasecmp(cur, want) == 0;
    }
    long double w, c;
    if ((strstr(type, "INT") || strcasecmp(type, "DOUBLE") == 0) && mdb_parse_size(want, &w) &&
        mdb_parse_size(cur, &c)) {
        long double lo, hi, b;
        if (min && mdb_parse_size(min, &lo) && w < lo)
            w = lo;
        if (max && mdb_parse_size(max, &hi) && w > hi)
            w = hi;
        if (strstr(type, "INT") && block && mdb_parse_size(block, &b) && b > 1)
            w = (long double)(unsigned long long)(w / b) * b;
        long double d = w > c ? w - c : c - w;
        return d <= (strcasecmp(type, "DOUBLE") == 0 ? 1e-6L * (1 + (w < 0 ? -w : w)) : 0.5L);
    }
    /* Strings, enums and sets: case-insensitive; paths with or without a trailing '/'. */
    size_t lc = strlen(cur), lw = strlen(want);
    if (lc > 1 && cur[lc - 1] == '/')
        lc--;
    if (lw > 1 && want[lw - 1] == '/')
        lw--;
    return lc == lw && strncasecmp(cur, want, lc) == 0;
}

/* Layout options whose option-file value is not the variable's value (log_bin names the
 * binary log, the variable is ON): dbplane renders them from the instance layout, which a
 * spec change does not move. */
static bool mdb_restart_skip(const char *name)
{
    static const char *const skip[] = {
        "log_bin", "log_basename", "relay_log",    "datadir",   "pid_file",
        "socket",  "port",         "bind_address", "server_id", NULL};
    for (int i = 0; skip[i]; i++)
        if (strcmp(name, skip[i]) == 0)
            return true;
    return false;
}

int mdb_needs_restart(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err)
{
    names[0] = '\0';
    char path[PATH_MAX];
    mdb_cnf(in, path, sizeof(path));
    struct stat st;
    if (stat(path, &st) != 0)
        return dbp_err_set(err, DBP_EIO, "stat %s: %s", path, strerror(errno));
    MYSQL *m = mdb_connect(in, false, err);
    if (!m)
        return DBP_EENGINE;
    int rc = 0;
    MYSQL_RES *res = NULL;
    mdb_opt_t *opts = NULL;
    char up[32];
    if ((rc = mdb_scalar(m,
                         "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                         "WHERE VARIABLE_NAME = 'UPTIME'",
                         up, sizeof(up), err)))
        goto out;
    if (engine_conf_current(st.st_mtime, strtoll(up, NULL, 10)))
        goto out;
    opts = calloc(MDB_RESTART_MAX_OPTS, sizeof(*opts));
    if (!opts) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    int n = mdb_read_opts(path, opts, MDB_RESTART_MAX_OPTS, err);
    if (n < 0) {
        rc = n;
        goto out;
    }
    res = mdb_query(m,
                    "SELECT LOWER(VARIABLE_NAME) AS name, GLOBAL_VALUE AS cur, "
                    "GLOBAL_VALUE_ORIGIN AS origin, VARIABLE_TYPE AS type, "
                    "NUMERIC_MIN_VALUE AS min, NUMERIC_MAX_VALUE AS max, "
                    "NUMERIC_BLOCK_SIZE AS block, DEFAULT_VALUE AS dflt "
                    "FROM information_schema.SYSTEM_VARIABLES WHERE READ_ONLY = 'YES' "
                    "ORDER BY name",
                    err);
    if (!res) {
        rc = DBP_EENGINE;
        goto out;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res))) {
        const char *name = mdb_col(res, row, "name");
        const char *cur = mdb_col(res, row, "cur");
        const char *type = mdb_col(res, row, "type");
        if (!name || !type || mdb_restart_skip(name))
            continue;
        const char *want = mdb_opt_get(opts, n, name);
        bool pending;
        if (want) {
            pending = !mdb_value_same(type, cur, want, mdb_col(res, row, "min"),
                                      mdb_col(res, row, "max"), mdb_col(res, row, "block"));
        } else {
            const char *origin = mdb_col(res, row, "origin");
            const char *dflt = mdb_col(res, row, "dflt");
            pending = origin && strcmp(origin, "CONFIG") == 0 && dflt &&
                      !mdb_value_same(type, cur, dflt, NULL, NULL, NULL);
        }
        if (pending) {
            dbp_info("mariadb_restart_pending", "instance=%s variable=%s running=%s declared=%s",
                     in->name, name, dbp_log_q(cur ? cur : ""),
                     dbp_log_q(want ? want : "(default)"));
            engine_names_add(names, len, name);
            rc = 1;
        }
    }
out:
    if (res)
        mysql_free_result(res);
    free(opts);
    mysql_close(m);
    return rc;
}

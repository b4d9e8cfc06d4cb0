/*
 * runner.h: `dbplane proxy-run --config FILE.json` — the proxy without the control plane,
 * for benchmarks and debugging. The JSON file describes one proxy_config_t (see runner.c
 * and docs/proxy.md for the format); it holds passwords, so it is refused unless its mode
 * is 0600 (no group/other bits).
 */
#ifndef DBP_PROXY_RUNNER_H
#define DBP_PROXY_RUNNER_H

#include "common/err.h"
#include "proxy/proxy.h"

/* Entry point of the subcommand: argv[0] is "proxy-run". Runs until SIGINT/SIGTERM;
 * SIGHUP reloads the file (proxy_update); SIGUSR1 prints stats JSON on stdout, as does the
 * exit. Returns the process exit status (0, 1 on a runtime error, 2 on usage). */
int proxy_run_main(int argc, char **argv);

/* Parsed configuration file: the config plus the storage its pointers refer to. */
typedef struct proxy_run_cfg {
    proxy_config_t cfg;
    json_t *doc;          /* owns the strings the config points to */
    proxy_cluster_t *clusters;
    proxy_user_t *users;  /* all clusters' users, one array */
    proxy_database_t *databases; /* all clusters' database caps, one array */
} proxy_run_cfg_t;

/* Loads and checks path (mode 0600, JSON shape). Returns 0 or a DBP_E* code with err
 * filled; on success free *out with proxy_run_cfg_free. */
int proxy_run_cfg_load(const char *path, proxy_run_cfg_t *out, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Wipes the passwords and frees what proxy_run_cfg_load allocated. */
void proxy_run_cfg_free(proxy_run_cfg_t *rc);

#endif

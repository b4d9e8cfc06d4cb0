/*
 * cli.h: the `dbplane` command line. Subcommands either run locally (up, validate) or
 * talk to the running daemon through its API (apply, get, status, wait, events, secret).
 */
#ifndef DBP_CLI_CLI_H
#define DBP_CLI_CLI_H

/* Runs the command line; returns the process exit status (0 ok, 1 failure or pending,
 * 2 usage error). */
int cli_main(int argc, char **argv);

#endif

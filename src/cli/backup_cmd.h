/*
 * backup_cmd.h: the backup subcommands of `dbplane` (backup, backups, restore), which
 * run in the CLI process itself on the data dir (like pgBackRest's commands), not
 * through the daemon's API: a backup can take hours and must not hold the daemon.
 */
#ifndef DBP_CLI_BACKUP_CMD_H
#define DBP_CLI_BACKUP_CMD_H

#include <stdbool.h>

/* True when the command line's subcommand (the first argument that is neither an option
 * nor an option's value) is one of this file's: cli_main hands such command lines over
 * before its own option parsing, which does not know their options. */
bool backup_cmd_owns(int argc, char **argv);

/* Runs `dbplane backup|backups|restore ...`; returns the exit status (0 ok, 1 failure,
 * 2 usage error). Run `dbplane backup --help` for the options. */
int backup_cmd_main(int argc, char **argv);

#endif

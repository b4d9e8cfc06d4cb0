/*
 * main.c: the dbplane binary's entry point; everything else is in cli/ and the modules.
 */
#include <curl/curl.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cli_main(argc, argv);
    curl_global_cleanup();
    return rc;
}

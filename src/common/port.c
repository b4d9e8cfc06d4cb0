/*
 * port.c: loopback port checks and per-data-dir scan starts (port.h).
 */
#include "common/port.h"

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

bool dbp_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

int dbp_port_scan_start(const char *key, int first, int last, int block)
{
    int blocks = block > 0 ? (last - first + 1) / block : 0;
    if (blocks <= 0)
        return first;
    uint32_t h = 2166136261u; /* FNV-1a, 32 bits */
    for (const unsigned char *c = (const unsigned char *)key; *c; c++)
        h = (h ^ *c) * 16777619u;
    return first + (int)(h % (uint32_t)blocks) * block;
}

/*
 * objstore.c: backup stores (objstore.h): the posix directory implementation, and the
 * streaming writer/reader on top of s3.c's requests (a writer buffers one part and
 * uploads it as part of a multipart upload, or with one PUT when the whole object fit in
 * the first part; a reader fetches the object in part-sized byte ranges).
 */
#include "backup/objstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/s3.h"
#include "common/log.h"
#include "common/proc.h"

#define OBJ_DEFAULT_PART (8u * 1024 * 1024)
#define OBJ_MIN_PART (5u * 1024 * 1024)
#define OBJ_MAX_PARTS 10000

struct backup_store {
    backup_store_kind_t kind;
    char name[64];
    char root[PATH_MAX];  /* posix root */
    char desc[600];
    size_t part_size;
    backup_s3_t *s3;
};

struct backup_obj_writer {
    backup_store_t *s;
    char key[512];
    int64_t total;
    /* posix */
    int fd;
    char tmp[PATH_MAX];
    char final[PATH_MAX];
    /* s3 */
    unsigned char *buf;
    size_t len;
    char upload_id[512];
    char (*etags)[64];
    int nparts, capparts;
};

struct backup_obj_reader {
    backup_store_t *s;
    char key[512];
    int fd;               /* posix */
    int64_t size, off;    /* s3: object size, next byte to fetch */
    unsigned char *buf;   /* s3: current range */
    size_t len, pos;
};

bool backup_key_valid(const char *key)
{
    if (!key || !*key || key[0] == '/' || strlen(key) > 400)
        return false;
    const char *seg = key;
    for (const char *p = key;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t l = (size_t)(p - seg);
            if (l == 0 || (l == 1 && seg[0] == '.') || (l == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (*p == '\0')
                break;
            seg = p + 1;
            continue;
        }
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int backup_store_open(backup_store_t **out, const backup_store_config_t *cfg, dbp_err_t *err)
{
    *out = NULL;
    backup_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    s->kind = cfg->kind;
    snprintf(s->name, sizeof(s->name), "%s", cfg->name);
    s->part_size = cfg->part_size ? cfg->part_size : OBJ_DEFAULT_PART;
    if (s->part_size < OBJ_MIN_PART)
        s->part_size = OBJ_MIN_PART;
    int rc = 0;
    if (cfg->kind == BACKUP_STORE_POSIX) {
        if (cfg->posix_path[0] != '/') {
            rc = dbp_err_set(err, DBP_EINVAL, "posix store %s: path '%s' is not absolute",
                             cfg->name, cfg->posix_path);
        } else {
            snprintf(s->root, sizeof(s->root), "%s", cfg->posix_path);
            size_t l = strlen(s->root);
            while (l > 1 && s->root[l - 1] == '/')
                s->root[--l] = '\0';
            snprintf(s->desc, sizeof(s->desc), "posix:%s", s->root);
            rc = dbp_mkdir_p(s->root, 0700, NULL, err);
        }
    } else {
        rc = backup_s3_open(&s->s3, cfg, err);
        snprintf(s->desc, sizeof(s->desc), "s3://%s/%s", cfg->bucket, cfg->prefix);
    }
    if (rc) {
        backup_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void backup_store_close(backup_store_t *s)
{
    if (!s)
        return;
    backup_s3_close(s->s3);
    free(s);
}

const char *backup_store_describe(const backup_store_t *s)
{
    return s->desc;
}

/* root/key into buf; DBP_EINVAL for a bad key. */
static int posix_path(const backup_store_t *s, const char *key, char *buf, size_t len,
                      dbp_err_t *err)
{
    if (!backup_key_valid(key))
        return dbp_err_set(err, DBP_EINVAL, "bad object key '%s'", key ? key : "");
    if (snprintf(buf, len, "%s/%s", s->root, key) >= (int)len)
        return dbp_err_set(err, DBP_EINVAL, "object path too long");
    return 0;
}

/* mkdir -p of the directory part of path (0700). */
static int posix_parent(const char *path, dbp_err_t *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    return dbp_mkdir_p(dir, 0700, NULL, err);
}

/* fsync of the directory holding path, so a rename survives a crash. */
static void posix_sync_dir(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0)
            dbp_warn("fsync_dir_failed", "path=%s error=%s", dbp_log_q(dir),
                     dbp_log_q(strerror(errno)));
        close(fd);
    }
}

int backup_obj_create(backup_store_t *s, const char *key, backup_obj_writer_t **out,
                      dbp_err_t *err)
{
    *out = NULL;
    if (!backup_key_valid(key))
        return dbp_err_set(err, DBP_EINVAL, "bad object key '%s'", key ? key : "");
    backup_obj_writer_t *w = calloc(1, sizeof(*w));
    if (!w)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    w->s = s;
    w->fd = -1;
    snprintf(w->key, sizeof(w->key), "%s", key);
    int rc = 0;
    if (s->kind == BACKUP_STORE_POSIX) {
        rc = posix_path(s, key, w->final, sizeof(w->final), err);
        if (!rc)
            rc = posix_parent(w->final, err);
        if (!rc) {
            snprintf(w->tmp, sizeof(w->tmp), "%s.partial.%d", w->final, (int)getpid());
            w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (w->fd < 0)
                rc = dbp_err_set(err, DBP_EIO, "create %s: %s", w->tmp, strerror(errno));
        }
    } else {
        w->buf = malloc(s->part_size);
        if (!w->buf)
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    if (rc) {
        free(w->buf);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* Uploads the buffered bytes as the next part (starting the multipart upload first). */
static int s3_flush_part(backup_obj_writer_t *w, dbp_err_t *err)
{
    if (!w->upload_id[0]) {
        int rc = backup_s3_mpu_start(w->s->s3, w->key, w->upload_id, sizeof(w->upload_id), err);
        if (rc)
            return rc;
    }
    if (w->nparts == OBJ_MAX_PARTS)
        return dbp_err_set(err, DBP_EIO, "object %s exceeds %d parts", w->key, OBJ_MAX_PARTS);
    if (w->nparts == w->capparts) {
        int ncap = w->capparts ? w->capparts * 2 : 64;
        char(*ne)[64] = realloc(w->etags, (size_t)ncap * sizeof(*ne));
        if (!ne)
            return dbp_err_set(err, DBP_ENOMEM, "out of memory");
        w->etags = ne;
        w->capparts = ncap;
    }
    int rc = backup_s3_mpu_part(w->s->s3, w->key, w->upload_id, w->nparts + 1, w->buf, w->len,
                                w->etags[w->nparts], err);
    if (rc)
        return rc;
    w->nparts++;
    w->len = 0;
    return 0;
}

int backup_obj_write(backup_obj_writer_t *w, const void *buf, size_t len, dbp_err_t *err)
{
    const unsigned char *b = buf;
    w->total += (int64_t)len;
    if (w->s->kind == BACKUP_STORE_POSIX) {
        while (len) {
            ssize_t n = write(w->fd, b, len);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return dbp_err_set(err, DBP_EIO, "write %s: %s", w->tmp, strerror(errno));
            }
            b += n;
            len -= (size_t)n;
        }
        return 0;
    }
    while (len) {
        size_t room = w->s->part_size - w->len;
        size_t n = len < room ? len : room;
        memcpy(w->buf + w->len, b, n);
        w->len += n;
        b += n;
        len -= n;
        if (w->len == w->s->part_size) {
            int rc = s3_flush_part(w, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void writer_free(backup_obj_writer_t *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->buf);
    free(w->etags);
    free(w);
}

int backup_obj_commit(backup_obj_writer_t *w, int64_t *bytes, dbp_err_t *err)
{
    int rc = 0;
    if (w->s->kind == BACKUP_STORE_POSIX) {
        if (fsync(w->fd) != 0)
            rc = dbp_err_set(err, DBP_EIO, "fsync %s: %s", w->tmp, strerror(errno));
        if (!rc && close(w->fd) != 0)
            rc = dbp_err_set(err, DBP_EIO, "close %s: %s", w->tmp, strerror(errno));
        w->fd = -1;
        if (!rc && rename(w->tmp, w->final) != 0)
            rc = dbp_err_set(err, DBP_EIO, "rename %s: %s", w->final, strerror(errno));
        if (!rc)
            posix_sync_dir(w->final);
        else
            unlink(w->tmp);
    } else if (!w->upload_id[0]) {
        /* Small object: one PUT. */
        rc = backup_s3_put(w->s->s3, w->key, w->buf, w->len, err);
    } else {
        if (w->len)
            rc = s3_flush_part(w, err);
        if (!rc)
            rc = backup_s3_mpu_complete(w->s->s3, w->key, w->upload_id, w->etags, w->nparts, err);
        if (rc)
            backup_s3_mpu_abort(w->s->s3, w->key, w->upload_id);
    }
    if (!rc && bytes)
        *bytes = w->total;
    writer_free(w);
    return rc;
}

void backup_obj_abort(backup_obj_writer_t *w)
{
    if (!w)
        return;
    if (w->s->kind == BACKUP_STORE_POSIX) {
        if (w->fd >= 0)
            close(w->fd);
        w->fd = -1;
        unlink(w->tmp);
    } else if (w->upload_id[0]) {
        backup_s3_mpu_abort(w->s->s3, w->key, w->upload_id);
    }
    writer_free(w);
}

int backup_obj_open(backup_store_t *s, const char *key, backup_obj_reader_t **out, int64_t *size,
                    dbp_err_t *err)
{
    *out = NULL;
    if (!backup_key_valid(key))
        return dbp_err_set(err, DBP_EINVAL, "bad object key '%s'", key ? key : "");
    backup_obj_reader_t *r = calloc(1, sizeof(*r));
    if (!r)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    r->s = s;
    r->fd = -1;
    snprintf(r->key, sizeof(r->key), "%s", key);
    int rc = 0;
    if (s->kind == BACKUP_STORE_POSIX) {
        char path[PATH_MAX];
        rc = posix_path(s, key, path, sizeof(path), err);
        if (!rc) {
            r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            struct stat st;
            if (r->fd < 0)
                rc = dbp_err_set(err, errno == ENOENT ? DBP_ENOENT : DBP_EIO, "open %s: %s", path,
                                 strerror(errno));
            else if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode))
                rc = dbp_err_set(err, DBP_EIO, "%s is not a regular file", path);
            else
                r->size = st.st_size;
        }
    } else {
        rc = backup_s3_head(s->s3, key, &r->size, err);
        if (!rc && r->size < 0)
            rc = dbp_err_set(err, DBP_EIO, "s3: HEAD %s: no Content-Length", key);
        if (!rc && !(r->buf = malloc(s->part_size)))
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    if (rc) {
        backup_obj_close(r);
        return rc;
    }
    if (size)
        *size = r->size;
    *out = r;
    return 0;
}

long backup_obj_read(backup_obj_reader_t *r, void *buf, size_t cap, dbp_err_t *err)
{
    if (r->s->kind == BACKUP_STORE_POSIX) {
        for (;;) {
            ssize_t n = read(r->fd, buf, cap);
            if (n >= 0)
                return (long)n;
            if (errno != EINTR)
                return dbp_err_set(err, DBP_EIO, "read %s: %s", r->key, strerror(errno));
        }
    }
    if (r->pos == r->len) {
        if (r->off >= r->size)
            return 0;
        size_t want = r->s->part_size;
        if ((int64_t)want > r->size - r->off)
            want = (size_t)(r->size - r->off);
        size_t got = 0;
        int rc = backup_s3_get_range(r->s->s3, r->key, r->off, want, r->buf, &got, err);
        if (rc)
            return rc;
        if (got == 0)
            return dbp_err_set(err, DBP_EIO, "s3: GET %s: object shorter than announced", r->key);
        r->off += (int64_t)got;
        r->len = got;
        r->pos = 0;
    }
    size_t n = r->len - r->pos;
    if (n > cap)
        n = cap;
    memcpy(buf, r->buf + r->pos, n);
    r->pos += n;
    return (long)n;
}

void backup_obj_close(backup_obj_reader_t *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r);
}

int backup_store_put(backup_store_t *s, const char *key, const void *data, size_t len,
                     dbp_err_t *err)
{
    backup_obj_writer_t *w;
    int rc = backup_obj_create(s, key, &w, err);
    if (rc)
        return rc;
    rc = backup_obj_write(w, data, len, err);
    if (rc) {
        backup_obj_abort(w);
        return rc;
    }
    return backup_obj_commit(w, NULL, err);
}

int backup_store_get(backup_store_t *s, const char *key, size_t max, char **data, size_t *len,
                     dbp_err_t *err)
{
    backup_obj_reader_t *r;
    int64_t size = 0;
    int rc = backup_obj_open(s, key, &r, &size, err);
    if (rc)
        return rc;
    if (size < 0 || (uint64_t)size > max) {
        backup_obj_close(r);
        return dbp_err_set(err, DBP_EINVAL, "object %s is larger than %zu bytes", key, max);
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        backup_obj_close(r);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    size_t n = 0;
    while (n < (size_t)size) {
        long got = backup_obj_read(r, buf + n, (size_t)size - n, err);
        if (got < 0) {
            free(buf);
            backup_obj_close(r);
            return (int)got;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    backup_obj_close(r);
    if (n != (size_t)size) {
        free(buf);
        return dbp_err_set(err, DBP_EIO, "object %s: short read", key);
    }
    buf[n] = '\0';
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

/* Walks dir (absolute) recursively, reporting regular files whose key starts with prefix. */
static int posix_walk(const backup_store_t *s, const char *dir, const char *prefix,
                      backup_list_cb cb, void *ud, dbp_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : dbp_err_set(err, DBP_EIO, "opendir %s: %s", dir,
                                                 strerror(errno));
    size_t rootlen = strlen(s->root) + 1;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
            continue;
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        const char *key = path + rootlen;
        size_t plen = strlen(prefix);
        if (S_ISDIR(st.st_mode)) {
            /* Descend only where the prefix can still match. */
            size_t kl = strlen(key);
            if (strncmp(key, prefix, kl < plen ? kl : plen) == 0)
                rc = posix_walk(s, path, prefix, cb, ud, err);
        } else if (S_ISREG(st.st_mode) && strncmp(key, prefix, plen) == 0) {
            rc = cb(key, (int64_t)st.st_size, ud);
        }
    }
    closedir(d);
    return rc;
}

int backup_store_list(backup_store_t *s, const char *prefix, backup_list_cb cb, void *ud,
                      dbp_err_t *err)
{
    if (s->kind == BACKUP_STORE_S3)
        return backup_s3_list(s->s3, prefix ? prefix : "", cb, ud, err);
    return posix_walk(s, s->root, prefix ? prefix : "", cb, ud, err);
}

int backup_store_delete(backup_store_t *s, const char *key, dbp_err_t *err)
{
    if (s->kind == BACKUP_STORE_S3) {
        if (!backup_key_valid(key))
            return dbp_err_set(err, DBP_EINVAL, "bad object key '%s'", key ? key : "");
        return backup_s3_delete(s->s3, key, err);
    }
    char path[PATH_MAX];
    /* Leftovers "<key>.partial.<pid>" are valid keys too. */
    int rc = posix_path(s, key, path, sizeof(path), err);
    if (rc)
        return rc;
    if (unlink(path) != 0 && errno != ENOENT)
        return dbp_err_set(err, DBP_EIO, "unlink %s: %s", path, strerror(errno));
    return 0;
}

/* Collects keys for backup_store_delete_dir (deleting while listing S3 pages is allowed,
 * but a posix walk must not remove entries from the directory it is reading). */
typedef struct keylist {
    char **v;
    int n, cap;
} keylist_t;

static int collect_cb(const char *key, int64_t size, void *ud)
{
    (void)size;
    keylist_t *kl = ud;
    if (kl->n == kl->cap) {
        int ncap = kl->cap ? kl->cap * 2 : 32;
        char **nv = realloc(kl->v, (size_t)ncap * sizeof(char *));
        if (!nv)
            return DBP_ENOMEM;
        kl->v = nv;
        kl->cap = ncap;
    }
    if (!(kl->v[kl->n] = strdup(key)))
        return DBP_ENOMEM;
    kl->n++;
    return 0;
}

int backup_store_delete_dir(backup_store_t *s, const char *dir, int *deleted, dbp_err_t *err)
{
    if (deleted)
        *deleted = 0;
    if (!backup_key_valid(dir))
        return dbp_err_set(err, DBP_EINVAL, "bad directory key '%s'", dir ? dir : "");
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/", dir);
    keylist_t kl = {0};
    int rc = backup_store_list(s, prefix, collect_cb, &kl, err);
    if (rc == DBP_ENOMEM)
        dbp_err_set(err, rc, "out of memory");
    /* The manifest goes first: a run directory is never left looking complete while its
     * data is half gone. */
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (int i = 0; i < kl.n && rc == 0; i++) {
            bool is_manifest = strstr(kl.v[i], "/manifest.json") != NULL &&
                               !strstr(kl.v[i], ".partial.");
            if ((pass == 0) != is_manifest)
                continue;
            rc = backup_store_delete(s, kl.v[i], err);
            if (!rc && deleted)
                (*deleted)++;
        }
    }
    for (int i = 0; i < kl.n; i++)
        free(kl.v[i]);
    free(kl.v);
    if (rc == 0 && s->kind == BACKUP_STORE_POSIX) {
        char path[PATH_MAX];
        if (posix_path(s, dir, path, sizeof(path), err) == 0 && rmdir(path) != 0 &&
            errno != ENOENT && errno != ENOTEMPTY)
            dbp_warn("rmdir_failed", "path=%s error=%s", dbp_log_q(path),
                     dbp_log_q(strerror(errno)));
    }
    return rc;
}

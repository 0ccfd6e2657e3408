/*
 * lxss-guest: lxss's native tools inside a distribution, one static binary with a
 * role per name (as WSL's /init is wslpath when called wslpath):
 *
 *   lxss-host-exec CMD [ARGS]   run CMD on the host, as the distribution's owner
 *   host-CMD [ARGS]             the same, for the shims of [interop] appendHostPath
 *   lxsspath [-a] [-u|-h|-m|-w] PATH
 *                               translate between distribution and host paths
 *
 * Native because a distribution may have no Python at all (busybox); static so it
 * runs whatever libc the distribution has, or none. Built by setup.sh with gcc.
 *
 * lxss-host-exec speaks the guest framing (lxss/protocol/codec.py) on the socket named
 * by LXSS_INTEROP, which the program's relay serves: it sends InteropCreateHostProcess
 * with its stdin, stdout and stderr attached (SCM_RIGHTS), so the host program uses
 * the very same pipes, files or terminal; it forwards the signals it gets as
 * InitSignal, and exits with the InitExitStatus that comes back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Message types and flags, as lxss/protocol/messages.py numbers them. */
#define TYPE_CREATE_HOST_PROCESS 1
#define TYPE_EXIT_STATUS 9
#define TYPE_CREATE_PROCESS_RESPONSE 11
#define TYPE_SIGNAL 120
#define FLAG_STDIN_CLOSED 0x8
#define FLAG_STDOUT_CLOSED 0x10
#define FLAG_STDERR_CLOSED 0x20
#define HEADER_SIZE 16
#define MAX_REQUEST (16u * 1024 * 1024) /* the framing's MAX_MESSAGE_SIZE */
#define MAX_REPLY 65536u

#define INTEROP_DIR "/run/lxss/interop"   /* made by init when interop is enabled */
#define HOST_MOUNT_FILE "/run/lxss/host-mount" /* where the host's root is, or empty */
#define FAILURE 255

static const char *program = "lxss-host-exec";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", program);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(FAILURE);
}

/* A growing byte buffer: the message being built. */
struct buffer {
    unsigned char *data;
    size_t size, capacity;
};

static void put(struct buffer *b, const void *data, size_t size)
{
    if (b->size + size > MAX_REQUEST)
        die("the command line and environment are too long to send (over %u bytes)", MAX_REQUEST);
    if (b->size + size > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->size + size)
            capacity *= 2;
        b->data = realloc(b->data, capacity);
        if (b->data == NULL)
            die("out of memory");
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, data, size);
    b->size += size;
}

static void put_u32_at(struct buffer *b, size_t offset, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        b->data[offset + i] = (unsigned char)(value >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------------------------------------------------------------------------- */
/* lxss-host-exec                                                                      */

/* The variables named by LXSSENV (NAME or NAME/flags, colon separated), and LXSSENV. */
static int wanted(const char *entry, const char *list)
{
    size_t name_length = strcspn(entry, "=");
    if (name_length == 7 && strncmp(entry, "LXSSENV", 7) == 0)
        return 1;
    for (const char *p = list; p && *p;) {
        size_t item = strcspn(p, ":");
        size_t name = strcspn(p, "/:");
        if (name > item)
            name = item;
        if (name == name_length && name > 0 && strncmp(p, entry, name) == 0)
            return 1;
        p += item;
        if (*p == ':')
            p++;
    }
    return 0;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void send_request(int sock, char **argv, int argc, uint32_t flags, const int *fds,
                         int fd_count)
{
    extern char **environ;
    struct buffer b = {0};
    unsigned char zero[HEADER_SIZE + 24] = {0};
    char cwd[PATH_MAX];
    const char *list = getenv("LXSSENV");
    uint32_t env_count = 0;

    put(&b, zero, sizeof zero); /* header and fixed part, filled in below */
    put_u32_at(&b, HEADER_SIZE, flags);
    if (getcwd(cwd, sizeof cwd) != NULL) {
        put_u32_at(&b, HEADER_SIZE + 4, (uint32_t)b.size);
        put(&b, cwd, strlen(cwd) + 1);
    }
    put_u32_at(&b, HEADER_SIZE + 8, (uint32_t)b.size);
    put_u32_at(&b, HEADER_SIZE + 12, (uint32_t)argc);
    for (int i = 0; i < argc; i++)
        put(&b, argv[i], strlen(argv[i]) + 1);
    size_t env_offset = b.size;
    for (char **e = environ; *e; e++) {
        if (strchr(*e, '=') != NULL && wanted(*e, list)) {
            put(&b, *e, strlen(*e) + 1);
            env_count++;
        }
    }
    put_u32_at(&b, HEADER_SIZE + 16, env_count ? (uint32_t)env_offset : 0);
    put_u32_at(&b, HEADER_SIZE + 20, env_count);
    put_u32_at(&b, 0, TYPE_CREATE_HOST_PROCESS);
    put_u32_at(&b, 4, (uint32_t)b.size);
    put_u32_at(&b, 8, 1); /* the first message of this direction */

    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(3 * sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    size_t sent = 0;
    while (sent < b.size) {
        struct iovec iov = {b.data + sent, b.size - sent};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (sent == 0 && fd_count > 0) {
            msg.msg_control = control.space;
            msg.msg_controllen = CMSG_SPACE(fd_count * sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(fd_count * sizeof(int));
            memcpy(CMSG_DATA(c), fds, fd_count * sizeof(int));
        }
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("cannot send the request to the interop server: %s", strerror(errno));
        }
        sent += (size_t)n;
    }
    free(b.data);
}

static uint32_t signal_sequence = 1;

static void send_signal(int sock, int signo)
{
    unsigned char frame[HEADER_SIZE + 4];
    struct buffer b = {frame, 0, sizeof frame};
    memset(frame, 0, sizeof frame);
    b.size = sizeof frame;
    put_u32_at(&b, 0, TYPE_SIGNAL);
    put_u32_at(&b, 4, sizeof frame);
    put_u32_at(&b, 8, ++signal_sequence);
    put_u32_at(&b, HEADER_SIZE, (uint32_t)signo);
    /* A server gone is noticed on the read side. */
    (void)send(sock, frame, sizeof frame, MSG_NOSIGNAL);
}

/* Read one whole message into *frame* (at most MAX_REPLY bytes); 0 at end of stream. */
static size_t read_message(int sock, unsigned char *frame)
{
    size_t have = 0, want = HEADER_SIZE;
    while (have < want) {
        ssize_t n = read(sock, frame + have, want - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("cannot read from the interop server: %s", strerror(errno));
        if (n == 0) {
            if (have == 0)
                return 0;
            die("the interop server sent a truncated message");
        }
        have += (size_t)n;
        if (have == HEADER_SIZE) {
            want = get_u32(frame + 4);
            if (want < HEADER_SIZE || want > MAX_REPLY)
                die("the interop server sent a message of %zu bytes", want);
        }
    }
    return have;
}

static int host_exec(const char *command, int argc, char **argv)
{
    const char *path = getenv("LXSS_INTEROP");
    if (path == NULL || *path == '\0') {
        if (access(INTEROP_DIR, F_OK) != 0)
            die("interop is disabled in this distribution ([interop] enabled = false in "
                "/etc/wsl.conf)");
        die("LXSS_INTEROP is not set: run me from a process that lxss started (its "
            "environment names the interop socket)");
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path)
        die("LXSS_INTEROP is too long for a socket path: %s", path);
    strcpy(address.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        die("cannot make a socket: %s", strerror(errno));
    if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0) {
        int e = errno;
        if (e == ECONNREFUSED || e == ENOENT)
            die("cannot reach the interop server at %s: %s (the lxss session that served "
                "it has ended)", path, strerror(e));
        die("cannot reach the interop server at %s: %s", path, strerror(e));
    }

    /* Signals become messages: block them and read them from a signalfd. */
    static const int forwarded[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2,
                                    SIGWINCH, SIGCONT};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaddset(&set, forwarded[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        die("cannot block signals: %s", strerror(errno));
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        die("cannot open a signalfd: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);

    int fds[3], fd_count = 0;
    uint32_t flags = 0;
    static const uint32_t closed[3] = {FLAG_STDIN_CLOSED, FLAG_STDOUT_CLOSED, FLAG_STDERR_CLOSED};
    for (int fd = 0; fd < 3; fd++) {
        if (is_open(fd))
            fds[fd_count++] = fd;
        else
            flags |= closed[fd];
    }
    char **words = calloc((size_t)argc + 1, sizeof *words);
    if (words == NULL)
        die("out of memory");
    words[0] = (char *)command;
    for (int i = 1; i < argc; i++)
        words[i] = argv[i];
    send_request(sock, words, argc, flags, fds, fd_count);
    free(words);
    /* The host program holds our streams now; ours must not keep a pipe open for it. */

    unsigned char *frame = malloc(MAX_REPLY);
    if (frame == NULL)
        die("out of memory");
    for (;;) {
        struct pollfd watch[2] = {{sock, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(watch, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        if (watch[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            if (read(sfd, &info, sizeof info) == (ssize_t)sizeof info)
                send_signal(sock, (int)info.ssi_signo);
        }
        if (!(watch[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        size_t size = read_message(sock, frame);
        if (size == 0)
            die("the interop server went away before %s's exit status came", command);
        uint32_t type = get_u32(frame);
        const unsigned char *body = frame + HEADER_SIZE;
        size_t body_size = size - HEADER_SIZE;
        if (type == TYPE_CREATE_PROCESS_RESPONSE && body_size >= 12) {
            int32_t result = (int32_t)get_u32(body);
            if (result == 0)
                continue;
            uint32_t offset = get_u32(body + 8);
            const char *reason = NULL;
            if (offset >= HEADER_SIZE + 12 && offset < size && memchr(frame + offset, 0, size - offset))
                reason = (const char *)frame + offset;
            fprintf(stderr, "%s: %s\n", program, reason ? reason : strerror(result));
            return result == ENOENT || result == ENOTDIR ? 127 : 126;
        }
        if (type == TYPE_EXIT_STATUS && body_size >= 4)
            return (int)(get_u32(body) & 0xff);
        /* Anything else is not for us. */
    }
}

/* ---------------------------------------------------------------------------------- */
/* lxsspath                                                                            */

static void usage(void)
{
    fprintf(stderr,
            "Usage: lxsspath [-a] [-u|-h|-m|-w] PATH\n"
            "  -a  print an absolute path, even for a relative PATH\n"
            "  -u  a host path to the distribution's (the default)\n"
            "  -h  a distribution path to the host's (-w and -m are the same)\n");
    exit(1);
}

static void fail(const char *path, int error)
{
    fprintf(stderr, "lxsspath: %s: %s\n", path, strerror(error));
    exit(1);
}

/* *path* joined to *base* when relative, with ".", ".." and repeated slashes folded away
 * (lexically: the path need not exist). The result is malloc'ed. */
static char *normalize(const char *base, const char *path)
{
    size_t size = strlen(base) + strlen(path) + 3;
    char *joined = malloc(size), *out = malloc(size);
    if (joined == NULL || out == NULL)
        die("out of memory");
    if (path[0] == '/')
        snprintf(joined, size, "%s", path);
    else
        snprintf(joined, size, "%s/%s", base, path);
    size_t length = 0;
    for (char *part = strtok(joined, "/"); part; part = strtok(NULL, "/")) {
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            while (length > 0 && out[length - 1] != '/')
                length--;
            if (length > 0)
                length--;
            continue;
        }
        out[length++] = '/';
        size_t n = strlen(part);
        memcpy(out + length, part, n);
        length += n;
    }
    if (length == 0)
        out[length++] = '/';
    out[length] = '\0';
    free(joined);
    return out;
}

/* The part of *path* below *prefix* ("/" for the prefix itself), or NULL. */
static const char *below(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 1 && prefix[0] == '/')
        return path;
    if (strncmp(path, prefix, n) != 0)
        return NULL;
    if (path[n] == '\0')
        return "/";
    return path[n] == '/' ? path + n : NULL;
}

static char *read_setting(const char *file)
{
    static char value[PATH_MAX];
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, value, sizeof value - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    value[n] = '\0';
    value[strcspn(value, "\n")] = '\0';
    return value[0] == '/' ? value : NULL;
}

/* *path* relative to *directory* when it lies below it, else *path* itself. */
static const char *relative_to(const char *path, const char *directory)
{
    const char *rest = below(path, directory);
    if (rest == NULL)
        return path;
    if (strcmp(rest, "/") == 0)
        return ".";
    return rest[0] == '/' ? rest + 1 : rest;
}

static int lxsspath(int argc, char **argv)
{
    int absolute = 0;
    char mode = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *word = argv[i];
        if (word[0] == '-' && word[1] != '\0' && path == NULL) {
            if (strcmp(word, "--") == 0) {
                if (i + 2 != argc)
                    usage();
                path = argv[i + 1];
                break;
            }
            for (const char *c = word + 1; *c; c++) {
                if (*c == 'a')
                    absolute = 1;
                else if (strchr("uhmw", *c) && (mode == 0 || mode == *c))
                    mode = *c;
                else
                    usage();
            }
        } else if (path == NULL) {
            path = word;
        } else {
            usage();
        }
    }
    if (path == NULL || *path == '\0')
        usage();
    const char *host_mount = read_setting(HOST_MOUNT_FILE);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        fail(path, errno);
    int relative = path[0] != '/';
    if (mode == 0 || mode == 'u') {
        /* Host -> distribution: below the host mount. */
        if (relative && !absolute) {
            printf("%s\n", path);
            return 0;
        }
        if (host_mount == NULL)
            fail(path, ENOENT); /* the host's files are not mounted here */
        if (relative) {
            char *mapped = normalize(cwd, path);
            printf("%s\n", mapped);
            return 0;
        }
        char *host = normalize("/", path);
        printf("%s%s\n", host_mount, strcmp(host, "/") == 0 ? "" : host);
        return 0;
    }
    /* Distribution -> host: symlinks resolved where the path exists, as wslpath does. */
    char *resolved = realpath(path, NULL);
    if (resolved == NULL && errno != ENOENT)
        fail(path, errno);
    char *full = normalize(cwd, resolved ? resolved : path);
    const char *host = host_mount ? below(full, host_mount) : NULL;
    if (host == NULL)
        fail(path, EINVAL); /* not a host file: it has no host path */
    if (relative && !absolute) {
        const char *host_cwd = host_mount ? below(cwd, host_mount) : NULL;
        if (host_cwd != NULL)
            host = relative_to(host, host_cwd);
    }
    printf("%s\n", host);
    return 0;
}

int main(int argc, char **argv)
{
    const char *name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    if (strcmp(name, "lxsspath") == 0) {
        program = "lxsspath";
        return lxsspath(argc, argv);
    }
    if (strncmp(name, "host-", 5) == 0 && name[5] != '\0') {
        program = name;
        return host_exec(name + 5, argc, argv);
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "Usage: lxss-host-exec CMD [ARGS]\n"
                        "Runs CMD on the host, as the distribution's owner, with this process's\n"
                        "standard streams, and exits with its exit status.\n");
        return argc < 2 ? FAILURE : 0;
    }
    if (strcmp(argv[1], "--") == 0) {
        if (argc < 3)
            die("no command after --");
        return host_exec(argv[2], argc - 2, argv + 2);
    }
    return host_exec(argv[1], argc - 1, argv + 1);
}

/*
 * lxss_attack: the system calls an attacker inside a distribution would try, one per
 * subcommand, for tests/integration/test_security_*.py.
 *
 * Built on the host with `gcc -static` and placed in a test distribution (which has no
 * compiler and only busybox). Each subcommand makes its attempt and prints one line:
 *
 *     <subcommand>: ok [detail]          the attempt succeeded
 *     <subcommand>: <errno name> (<n>)   the kernel refused it
 *
 * and exits 0 either way (exit 2 means a usage error). The tests read the line: a
 * refusal must be the one the isolation model promises, not a typo in a path.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

struct lxss_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int report(const char *what, long result) {
    if (result < 0)
        printf("%s: %s (%d)\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "?",
               errno);
    else
        printf("%s: ok\n", what);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: lxss_attack SUBCOMMAND ARGS (see the source)\n");
    return 2;
}

/* PTRACE_ATTACH to a pid (detaching again if it worked). */
static int do_ptrace(int pid) {
    long r = ptrace(PTRACE_ATTACH, pid, 0, 0);
    int saved = errno;
    if (r == 0) {
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, 0, 0);
    }
    errno = saved;
    return report("ptrace", r);
}

/* Read another process's memory without ptrace. */
static int do_vm_read(int pid) {
    char byte;
    struct iovec local = {&byte, 1}, remote = {(void *)0x400000, 1};
    long r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    /* EFAULT means the kernel let us at the address space: as bad as success. */
    if (r < 0 && errno == EFAULT)
        r = 0;
    return report("vm_read", r);
}

/* Copy a descriptor out of another process (pidfd_getfd). */
static int do_getfd(int pid, int fd) {
    long pidfd = syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return report("getfd", pidfd);
    return report("getfd", syscall(SYS_pidfd_getfd, (int)pidfd, fd, 0));
}

static int do_open(const char *what, const char *path, int flags) {
    int fd = open(path, flags | O_CLOEXEC);
    if (fd >= 0 && (flags & O_ACCMODE) == O_RDONLY) {
        char byte;
        if (read(fd, &byte, 1) < 0 && errno != EISDIR) {
            return report(what, -1);
        }
    }
    return report(what, fd);
}

static int do_mknod(const char *path, const char *kind, int major_, int minor_) {
    mode_t type = kind[0] == 'b' ? S_IFBLK : S_IFCHR;
    return report("mknod", mknod(path, type | 0600, makedev(major_, minor_)));
}

static int do_finit_module(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return report("finit_module", fd);
    return report("finit_module", syscall(SYS_finit_module, fd, "", 0));
}

static int do_init_module(void) {
    static char image[4096] = "\177ELF";
    return report("init_module", syscall(SYS_init_module, image, sizeof image, ""));
}

/* Set the clock to the time it already shows: harmless if the kernel wrongly allows it. */
static int do_settime(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return report("settime", clock_settime(CLOCK_REALTIME, &now));
}

static int do_settimeofday(void) {
    struct timeval now;
    gettimeofday(&now, NULL);
    return report("settimeofday", settimeofday(&now, NULL));
}

/* An idmapped mount of a host directory that maps the host's ids onto ours. */
static int do_idmap(const char *path, const char *target) {
    long tree = syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | O_CLOEXEC);
    if (tree < 0)
        return report("idmap", tree);
    int userns = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    struct lxss_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = userns};
    long r = syscall(SYS_mount_setattr, (int)tree, "", AT_EMPTY_PATH, &attr, sizeof attr);
    if (r == 0 && target != NULL)
        r = syscall(SYS_move_mount, (int)tree, "", AT_FDCWD, target, 4 /* F_EMPTY_PATH */);
    return report("idmap", r);
}

/* The "shocker" escape: open a host file by handle, bypassing the path walk. */
static int do_handle(const char *path) {
    struct {
        struct file_handle handle;
        unsigned char bytes[128];
    } h;
    int mount_id;
    h.handle.handle_bytes = sizeof h.bytes;
    if (name_to_handle_at(AT_FDCWD, path, &h.handle, &mount_id, 0) < 0)
        return report("open_by_handle", -1);
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return report("open_by_handle", open_by_handle_at(mount_fd, &h.handle, O_RDONLY));
}

static int do_bind_port(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return report("bind", bind(s, (struct sockaddr *)&address, sizeof address));
}

static int do_raw_socket(void) {
    return report("raw_socket", socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
}

/* Join a namespace through its /proc link (nsenter's way in). */
static int do_setns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return report("setns", fd);
    return report("setns", setns(fd, 0));
}

static int do_nice(void) { return report("nice", setpriority(PRIO_PROCESS, 0, -20)); }

static int do_rlimit(void) {
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_max == RLIM_INFINITY) {
        printf("rlimit: already unlimited\n");
        return 0;
    }
    limit.rlim_max += 1;
    return report("rlimit", setrlimit(RLIMIT_NOFILE, &limit));
}

/* Chroot, then climb out of the chroot the classic way and read a file. */
static int do_chroot_escape(const char *path) {
    mkdir("/tmp/lxss-jail", 0700);
    if (chroot("/tmp/lxss-jail") < 0)
        return report("chroot_escape", -1);
    for (int i = 0; i < 64; i++)
        chdir("..");
    if (chroot(".") < 0)
        return report("chroot_escape", -1);
    return do_open("chroot_escape", path, O_RDONLY);
}

/*
 * Watch every /proc/PID/exe for SECONDS, trying to open it for writing (CVE-2019-5736:
 * runc's own binary, reached through the exe link of a runc process entering the
 * container) and for reading. Prints how many writable opens succeeded, and how many
 * read-only opens reached the file with the given device and inode (the host's
 * interpreter, which the lxss roles run).
 */
static int do_exe_watch(dev_t dev, ino_t ino, int seconds) {
    time_t end = time(NULL) + seconds;
    long writable = 0, host = 0, scans = 0;
    while (time(NULL) < end) {
        DIR *proc = opendir("/proc");
        struct dirent *entry;
        if (proc == NULL)
            return report("exe_watch", -1);
        while ((entry = readdir(proc)) != NULL) {
            char path[300];
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
                continue;
            snprintf(path, sizeof path, "/proc/%s/exe", entry->d_name);
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                writable++;
                close(fd);
            }
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                struct stat st;
                if (fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
                    host++;
                close(fd);
            }
        }
        closedir(proc);
        scans++;
    }
    printf("exe_watch: scans=%ld writable=%ld host=%ld\n", scans, writable, host);
    return 0;
}

/* Every descriptor this process holds, as "fd -> target" lines (readlink, no shell). */
static int do_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    if (dir == NULL)
        return report("fds", -1);
    while ((entry = readdir(dir)) != NULL) {
        char path[300], target[512];
        if (entry->d_name[0] == '.' || atoi(entry->d_name) == dirfd(dir))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        printf("fd %s -> %s\n", entry->d_name, target);
    }
    closedir(dir);
    return 0;
}

/*
 * The controlling terminal: this process's tty_nr (/proc/self/stat, field 7), then
 * /dev/tty opened, a keystroke pushed into its input with TIOCSTI, and a read of what
 * is typed on it. With no controlling terminal, /dev/tty refuses to open (ENXIO).
 */
static int do_ctty(void) {
    char stat[1024];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, stat, sizeof stat - 1);
    if (fd >= 0)
        close(fd);
    stat[n < 0 ? 0 : n] = 0;
    char *rest = strrchr(stat, ')');
    int tty_nr = -1;
    if (rest == NULL || sscanf(rest + 2, "%*c %*d %*d %*d %d", &tty_nr) != 1)
        tty_nr = -1;
    printf("ctty_nr: %d\n", tty_nr);
    int tty = open("/dev/tty", O_RDWR | O_NONBLOCK | O_NOCTTY);
    report("open_tty", tty);
    if (tty < 0)
        return 0;
    const char *keys = "echo lxss-injected\n";
    long r = 0;
    for (const char *k = keys; *k && r == 0; k++)
        r = ioctl(tty, TIOCSTI, k);
    report("tiocsti", r);
    char buffer[64];
    report("read_tty", read(tty, buffer, sizeof buffer));
    close(tty);
    return 0;
}

/*
 * Hold connections to the service's socket as many users at once: for each uid 1..UIDS
 * a child becomes that uid (distribution root may be any of its ids), connects PER_UID
 * times and makes one GetVersion call on each, which answers (held) or ServiceBusy
 * (refused); then every child keeps its connections until stdin closes. Prints
 * "hold: held=H refused=R failed=F" once every connection has had its answer.
 */
static int hold_as(const char *path, int uid, int per_uid, int out) {
    if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
        return dprintf(out, "0 0 %d\n", per_uid), 1;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", path);
    const char call[] = "{\"method\": \"io.lxss.Service.GetVersion\", \"parameters\": {}}";
    int held = 0, refused = 0, failed = 0;
    for (int i = 0; i < per_uid; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct timeval limit = {.tv_sec = 60};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        char reply[4096] = {0};
        ssize_t n = -1;
        /* The service may refuse a connection before reading a byte of it: the send then
         * fails with EPIPE, and its ServiceBusy is still there to read (as lxss reads it). */
        if (connect(s, (struct sockaddr *)&address, sizeof address) == 0) {
            send(s, call, sizeof call, MSG_NOSIGNAL);
            n = recv(s, reply, sizeof reply - 1, 0);
        }
        if (n > 0 && strstr(reply, "ServiceBusy") == NULL) {
            held++; /* kept open */
        } else if (n > 0) {
            refused++, close(s);
        } else {
            if (!failed)
                fprintf(stderr, "hold: uid %d: %s\n", uid, n == 0 ? "closed" : strerror(errno));
            failed++, close(s);
        }
    }
    dprintf(out, "%d %d %d\n", held, refused, failed);
    close(out);
    char buffer[64];
    while (read(0, buffer, sizeof buffer) > 0)
        ;
    return 0;
}

static int do_hold(const char *path, int uids, int per_uid) {
    int answers_pipe[2];
    if (pipe(answers_pipe) < 0)
        return report("hold", -1);
    for (int uid = 1; uid <= uids; uid++) {
        if (fork() == 0) {
            close(answers_pipe[0]);
            _exit(hold_as(path, uid, per_uid, answers_pipe[1]));
        }
    }
    close(answers_pipe[1]);
    FILE *answers = fdopen(answers_pipe[0], "r");
    long held = 0, refused = 0, failed = 0, h, r, f;
    while (fscanf(answers, "%ld %ld %ld", &h, &r, &f) == 3)
        held += h, refused += r, failed += f;
    printf("hold: held=%ld refused=%ld failed=%ld\n", held, refused, failed);
    while (wait(NULL) > 0)
        ;
    return 0;
}

/*
 * Kernel interfaces a container's default seccomp filter takes away, one attempt each:
 * io_uring_setup, perf_event_open, keyctl, userfaultfd and a nested user namespace.
 */
static int do_kernel_surface(void) {
    char params[120] = {0}; /* struct io_uring_params */
    long fd = syscall(__NR_io_uring_setup, 1, params);
    report("io_uring_setup", fd);
    if (fd >= 0)
        close((int)fd);
    char attr[128] = {0}; /* struct perf_event_attr: a software clock event of our own */
    *(unsigned int *)attr = 1;                /* type PERF_TYPE_SOFTWARE */
    *(unsigned int *)(attr + 4) = sizeof attr; /* size */
    fd = syscall(__NR_perf_event_open, attr, 0, -1, -1, 0);
    report("perf_event_open", fd);
    if (fd >= 0)
        close((int)fd);
    report("keyctl", syscall(__NR_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    fd = syscall(__NR_userfaultfd, 0);
    report("userfaultfd", fd);
    if (fd >= 0)
        close((int)fd);
    pid_t child = fork();
    if (child == 0)
        _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno);
    int status = 0;
    waitpid(child, &status, 0);
    errno = WEXITSTATUS(status);
    report("userns", errno ? -1 : 0);
    return 0;
}

/*
 * Connect to a Unix socket and send COUNT pseudo-random garbage messages, each
 * NUL-terminated, reconnecting whenever the peer closes. Prints how many were sent,
 * how many replies came back and how many times the peer hung up.
 */
static int do_garbage(const char *path, int count, unsigned seed) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path, path, sizeof address.sun_path - 1);
    long sent = 0, replies = 0, closed = 0;
    int s = -1;
    static char buffer[70000];
    for (int i = 0; i < count; i++) {
        if (s < 0) {
            s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct timeval timeout = {10, 0};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            if (connect(s, (struct sockaddr *)&address, sizeof address) < 0)
                return report("garbage", -1);
        }
        int length = 1 + rand_r(&seed) % 512;
        for (int j = 0; j < length; j++)
            buffer[j] = (char)(rand_r(&seed) % 4 ? rand_r(&seed) % 256 : "{}[]\":,"[j % 7]);
        buffer[length - 1] = 0;
        if (send(s, buffer, length, MSG_NOSIGNAL) < 0) {
            close(s);
            s = -1;
            closed++;
            continue;
        }
        sent++;
        ssize_t n = recv(s, buffer, sizeof buffer, 0);
        if (n > 0) {
            replies++;
        } else if (n == 0 || errno != EAGAIN) {
            close(s);
            s = -1;
            closed++;
        } else {
            printf("garbage: no answer in 10 s\n");
            return 0;
        }
    }
    printf("garbage: sent=%ld replies=%ld closed=%ld\n", sent, replies, closed);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return usage();
    const char *c = argv[1];
    if (!strcmp(c, "ptrace") && argc == 3)
        return do_ptrace(atoi(argv[2]));
    if (!strcmp(c, "vm_read") && argc == 3)
        return do_vm_read(atoi(argv[2]));
    if (!strcmp(c, "getfd") && argc == 4)
        return do_getfd(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(c, "read") && argc == 3)
        return do_open("read", argv[2], O_RDONLY);
    if (!strcmp(c, "write") && argc == 3)
        return do_open("write", argv[2], O_WRONLY);
    if (!strcmp(c, "mknod") && argc == 6)
        return do_mknod(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (!strcmp(c, "mount") && argc == 5)
        return report("mount", mount(argv[2], argv[3], argv[4], 0, NULL));
    if (!strcmp(c, "finit_module") && argc == 3)
        return do_finit_module(argv[2]);
    if (!strcmp(c, "init_module") && argc == 2)
        return do_init_module();
    if (!strcmp(c, "settime") && argc == 2)
        return do_settime();
    if (!strcmp(c, "settimeofday") && argc == 2)
        return do_settimeofday();
    if (!strcmp(c, "idmap") && (argc == 3 || argc == 4))
        return do_idmap(argv[2], argc == 4 ? argv[3] : NULL);
    if (!strcmp(c, "open_by_handle") && argc == 3)
        return do_handle(argv[2]);
    if (!strcmp(c, "bind") && argc == 3)
        return do_bind_port(atoi(argv[2]));
    if (!strcmp(c, "raw_socket") && argc == 2)
        return do_raw_socket();
    if (!strcmp(c, "setns") && argc == 3)
        return do_setns(argv[2]);
    if (!strcmp(c, "nice") && argc == 2)
        return do_nice();
    if (!strcmp(c, "rlimit") && argc == 2)
        return do_rlimit();
    if (!strcmp(c, "chroot_escape") && argc == 3)
        return do_chroot_escape(argv[2]);
    if (!strcmp(c, "exe_watch") && argc == 5)
        return do_exe_watch((dev_t)strtoull(argv[2], NULL, 10),
                            (ino_t)strtoull(argv[3], NULL, 10), atoi(argv[4]));
    if (!strcmp(c, "fds") && argc == 2)
        return do_fds();
    if (!strcmp(c, "ctty") && argc == 2)
        return do_ctty();
    if (!strcmp(c, "kernel_surface") && argc == 2)
        return do_kernel_surface();
    if (!strcmp(c, "hold") && argc == 5)
        return do_hold(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (!strcmp(c, "garbage") && argc == 5)
        return do_garbage(argv[2], atoi(argv[3]), (unsigned)atoi(argv[4]));
    return usage();
}

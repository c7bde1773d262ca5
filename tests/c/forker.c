/* fork() and daemon() under ustrace (tests/c_api.rs).
 *   forker fork N    emits demo:who("parent", 0), forks N children one after the
 *                    other, each emitting demo:who("child", i) 10 times and
 *                    exiting; then demo:who("parent", 1).
 *   forker daemon    emits demo:who("parent", 0), calls daemon(); the daemonized
 *                    child emits demo:who("daemon", i) 10 times.
 *   forker exec      emits demo:who("parent", 0), prints how many of ustrace's fds (socket,
 *                    memfd, eventfd) lack FD_CLOEXEC, and forks a child that execs `forker fork 0`. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ustrace/ustrace.h>

USTRACE_EVENT(demo, who, USTRACE_INFO, USTRACE_FIELDS(ustrace_string(role), ustrace_i32(i)));

int main(int argc, char **argv)
{
    ustrace_tracepoint(demo, who, "parent", 0);
    if (argc > 1 && strcmp(argv[1], "daemon") == 0) {
        if (daemon(1, 1) != 0)
            return 1;
        for (int i = 0; i < 10; i++)
            ustrace_tracepoint(demo, who, "daemon", i);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exec") == 0) {
        int inherited = 0;
        DIR *fds = opendir("/proc/self/fd");
        struct dirent *entry;
        while (fds && (entry = readdir(fds))) {
            int fd = atoi(entry->d_name);
            char path[64], target[256];
            snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
            ssize_t n = readlink(path, target, sizeof(target) - 1);
            target[n > 0 ? n : 0] = 0;
            /* Ours: the daemon connection, ring memfds, wake-up eventfds. */
            int ours = strncmp(target, "socket:", 7) == 0 || strncmp(target, "/memfd:", 7) == 0 ||
                       strstr(target, "eventfd") != NULL;
            if (fd > 2 && ours && !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
                inherited++;
        }
        if (fds)
            closedir(fds);
        printf("%d\n", inherited);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            execl("/proc/self/exe", argv[0], "fork", "0", (char *)NULL);
            _exit(127);
        }
        int status;
        return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    int children = argc > 2 ? atoi(argv[2]) : 1;
    for (int c = 0; c < children; c++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            for (int i = 0; i < 10; i++)
                ustrace_tracepoint(demo, who, "child", i);
            exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 1;
    }
    ustrace_tracepoint(demo, who, "parent", 1);
    return 0;
}

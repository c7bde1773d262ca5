/* fork() and daemon() under ustrace (tests/c_api.rs).
 *   forker fork N    emits demo:who("parent", 0), forks N children one after the
 *                    other, each emitting demo:who("child", i) 10 times and
 *                    exiting; then demo:who("parent", 1).
 *   forker daemon    emits demo:who("parent", 0), calls daemon(); the daemonized
 *                    child emits demo:who("daemon", i) 10 times. */
#define _DEFAULT_SOURCE
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

/* Emits demo:host, then loads the library argv[1] with dlopen() and calls its
 * plugin_run(7): the library's event, registered late, is recorded from its
 * first emission. */
#include <dlfcn.h>
#include <stdio.h>
#include <ustrace/ustrace.h>

USTRACE_EVENT(demo, host, USTRACE_INFO, USTRACE_FIELDS(ustrace_i32(step)));

int main(int argc, char **argv)
{
    ustrace_tracepoint(demo, host, 1);
    if (argc < 2)
        return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void (*run)(uint32_t);
    *(void **)&run = dlsym(lib, "plugin_run");
    if (!run)
        return 1;
    run(7);
    ustrace_tracepoint(demo, host, 2);
    return 0;
}

/* A shared library with its own event, loaded with dlopen() by host.c after main()
 * started: its constructor registers demo:plugin late. */
#include <ustrace/ustrace.h>

USTRACE_EVENT(demo, plugin, USTRACE_INFO, USTRACE_FIELDS(ustrace_u32(x), ustrace_string(from)));

void plugin_run(uint32_t x);

void plugin_run(uint32_t x)
{
    ustrace_tracepoint(demo, plugin, x, "plugin");
}

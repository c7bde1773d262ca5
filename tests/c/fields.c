/* Every field type of ustrace.h, recorded from main()'s first statement on; built
 * as C and as C++ by tests/c_api.rs. Prints nothing; exits 0. */
#include <ustrace/ustrace.h>

USTRACE_ENUM_LABELS(color, { "red", 0 }, { "green", 1 }, { "blue", 7 });

USTRACE_EVENT(demo, first, USTRACE_INFO, USTRACE_FIELDS(ustrace_i32(n)));

USTRACE_EVENT(demo, all, USTRACE_WARNING,
              USTRACE_FIELDS(ustrace_i8(a), ustrace_i16(b), ustrace_i32(c), ustrace_i64(d),
                             ustrace_u8(e), ustrace_u16(f), ustrace_u32(g), ustrace_u64(h),
                             ustrace_float(fl), ustrace_double(db), ustrace_bool(ok),
                             ustrace_string(s), ustrace_bytes(raw), ustrace_enum(color, col)));

int main(void)
{
    ustrace_tracepoint(demo, first, 1);
    static const unsigned char raw[3] = { 1, 2, 255 };
    ustrace_tracepoint(demo, all, -128, -32768, -2147483647 - 1, INT64_MIN, 255, 65535,
                       4294967295u, UINT64_MAX, 1.5f, -0.25, true, "héllo", raw, 3, 7);
    ustrace_tracepoint(demo, all, 127, 32767, 2147483647, INT64_MAX, 0, 0, 0, 0, -2.0f, 1e100,
                       false, NULL, raw, 0, 1);
    ustrace_tracef("tracef %d %s", 42, "done");
    return 0;
}

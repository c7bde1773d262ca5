/*
 * ustrace.h: trace C and C++ programs with ustrace.
 *
 * C99; compiles as C++17 (-Wall -Wextra, no warnings). Link with
 * `$(pkg-config --cflags --libs ustrace)` (scripts/install-c.sh installs it).
 *
 *   #include <ustrace/ustrace.h>
 *
 *   USTRACE_ENUM_LABELS(color, { "red", 0 }, { "green", 1 });
 *   USTRACE_EVENT(my_app, request, USTRACE_INFO,
 *       USTRACE_FIELDS(ustrace_u32(id), ustrace_string(path), ustrace_enum(color, c)));
 *
 *   int main(void) {
 *       ustrace_tracepoint(my_app, request, 42, "/index.html", 1);
 *       ustrace_tracef("%d requests", 1);
 *   }
 *
 * Every event of the program and of each shared library is registered with the
 * session daemon by a constructor, before main() runs (or when dlopen() loads the
 * library): main() starts once the buffers are mapped, so its first event is
 * recorded. A disabled event costs one relaxed load and a branch, inline. An
 * event has 1 to 16 fields; its arguments follow them, in order:
 *
 *   ustrace_i8(x) .. ustrace_i64(x)   int8_t .. int64_t
 *   ustrace_u8(x) .. ustrace_u64(x)   uint8_t .. uint64_t
 *   ustrace_float(x), ustrace_double(x), ustrace_bool(x)
 *   ustrace_string(x)                 const char * (NULL records "(null)")
 *   ustrace_bytes(x)                  two arguments: const void *x, uint32_t x_len
 *   ustrace_enum(labels, x)           int32_t, labelled by USTRACE_ENUM_LABELS(labels, ...)
 *
 * A library with events must stay loaded (no dlclose) for the rest of the process.
 */
#ifndef USTRACE_USTRACE_H
#define USTRACE_USTRACE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#ifndef __cplusplus
#include <stdbool.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Log levels, with LTTng's numbering. */
enum ustrace_loglevel {
    USTRACE_EMERG = 0,
    USTRACE_ALERT = 1,
    USTRACE_CRIT = 2,
    USTRACE_ERR = 3,
    USTRACE_WARNING = 4,
    USTRACE_NOTICE = 5,
    USTRACE_INFO = 6,
    USTRACE_DEBUG_SYSTEM = 7,
    USTRACE_DEBUG_PROGRAM = 8,
    USTRACE_DEBUG_PROCESS = 9,
    USTRACE_DEBUG_MODULE = 10,
    USTRACE_DEBUG_UNIT = 11,
    USTRACE_DEBUG_FUNCTION = 12,
    USTRACE_DEBUG_LINE = 13,
    USTRACE_DEBUG = 14
};

/* Field type codes (libustrace maps them onto its CTF field types). */
enum ustrace_type {
    USTRACE_TYPE_I8 = 1,
    USTRACE_TYPE_I16 = 2,
    USTRACE_TYPE_I32 = 3,
    USTRACE_TYPE_I64 = 4,
    USTRACE_TYPE_U8 = 5,
    USTRACE_TYPE_U16 = 6,
    USTRACE_TYPE_U32 = 7,
    USTRACE_TYPE_U64 = 8,
    USTRACE_TYPE_FLOAT = 9,
    USTRACE_TYPE_DOUBLE = 10,
    USTRACE_TYPE_BOOL = 11,
    USTRACE_TYPE_STRING = 12,
    USTRACE_TYPE_BYTES = 13,
    USTRACE_TYPE_ENUM = 14
};

struct ustrace_enum_label {
    const char *label;
    int64_t value;
};

struct ustrace_field {
    const char *name;
    uint32_t type;
    uint32_t nlabels;
    const struct ustrace_enum_label *labels;
};

/* One event. `state` and `handle` belong to libustrace. */
struct ustrace_event {
    uint64_t state;
    const char *provider;
    const char *name;
    int32_t loglevel;
    uint32_t nfields;
    const struct ustrace_field *fields;
    void *handle;
};

struct ustrace_arg {
    const void *data;
    size_t len;
};

/* libustrace's entry points; the macros below call them. */
void ustrace_register_events(struct ustrace_event *const *events, size_t count);
void ustrace_record(const struct ustrace_event *event, const struct ustrace_arg *args,
                    uint32_t count);
void ustrace_tracef_record(const char *message);
extern uint64_t ustrace_tracef_state;

/* Longest ustrace_tracef message, NUL included; longer ones are cut. */
#define USTRACE_TRACEF_MAX 512

#define USTRACE__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define USTRACE__ENABLED(ev) USTRACE__UNLIKELY(__atomic_load_n(&(ev).state, __ATOMIC_RELAXED))

static inline struct ustrace_arg ustrace__string_arg(const char *s)
{
    struct ustrace_arg arg;
    if (!s)
        s = "(null)";
    arg.data = s;
    arg.len = strlen(s) + 1;
    return arg;
}

/* Mapping a macro over 1 to 16 arguments, comma-separated. */
#define USTRACE__CAT(a, b) USTRACE__CAT_(a, b)
#define USTRACE__CAT_(a, b) a##b
#define USTRACE__UNPAREN(...) __VA_ARGS__
#define USTRACE__NARGS(...) USTRACE__NARGS_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define USTRACE__NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, n, ...) n
#define USTRACE__MAPC(m, ...) USTRACE__MAPC__(m, USTRACE__NARGS(__VA_ARGS__), __VA_ARGS__)
#define USTRACE__MAPC__(m, n, ...) USTRACE__CAT(USTRACE__MAPC_, n)(m, __VA_ARGS__)
#define USTRACE__MAPC_1(m, x) m(x)
#define USTRACE__MAPC_2(m, x, ...) m(x), USTRACE__MAPC_1(m, __VA_ARGS__)
#define USTRACE__MAPC_3(m, x, ...) m(x), USTRACE__MAPC_2(m, __VA_ARGS__)
#define USTRACE__MAPC_4(m, x, ...) m(x), USTRACE__MAPC_3(m, __VA_ARGS__)
#define USTRACE__MAPC_5(m, x, ...) m(x), USTRACE__MAPC_4(m, __VA_ARGS__)
#define USTRACE__MAPC_6(m, x, ...) m(x), USTRACE__MAPC_5(m, __VA_ARGS__)
#define USTRACE__MAPC_7(m, x, ...) m(x), USTRACE__MAPC_6(m, __VA_ARGS__)
#define USTRACE__MAPC_8(m, x, ...) m(x), USTRACE__MAPC_7(m, __VA_ARGS__)
#define USTRACE__MAPC_9(m, x, ...) m(x), USTRACE__MAPC_8(m, __VA_ARGS__)
#define USTRACE__MAPC_10(m, x, ...) m(x), USTRACE__MAPC_9(m, __VA_ARGS__)
#define USTRACE__MAPC_11(m, x, ...) m(x), USTRACE__MAPC_10(m, __VA_ARGS__)
#define USTRACE__MAPC_12(m, x, ...) m(x), USTRACE__MAPC_11(m, __VA_ARGS__)
#define USTRACE__MAPC_13(m, x, ...) m(x), USTRACE__MAPC_12(m, __VA_ARGS__)
#define USTRACE__MAPC_14(m, x, ...) m(x), USTRACE__MAPC_13(m, __VA_ARGS__)
#define USTRACE__MAPC_15(m, x, ...) m(x), USTRACE__MAPC_14(m, __VA_ARGS__)
#define USTRACE__MAPC_16(m, x, ...) m(x), USTRACE__MAPC_15(m, __VA_ARGS__)

/* Each field kind, in each of the three places it appears. */
#define USTRACE__DESC(f) USTRACE__DESC_##f
#define USTRACE__PARAM(f) USTRACE__PARAM_##f
#define USTRACE__ARG(f) USTRACE__ARG_##f

#define USTRACE__FIXED(x, code) { #x, code, 0, 0 }
#define USTRACE__DESC_ustrace_i8(x) USTRACE__FIXED(x, USTRACE_TYPE_I8)
#define USTRACE__DESC_ustrace_i16(x) USTRACE__FIXED(x, USTRACE_TYPE_I16)
#define USTRACE__DESC_ustrace_i32(x) USTRACE__FIXED(x, USTRACE_TYPE_I32)
#define USTRACE__DESC_ustrace_i64(x) USTRACE__FIXED(x, USTRACE_TYPE_I64)
#define USTRACE__DESC_ustrace_u8(x) USTRACE__FIXED(x, USTRACE_TYPE_U8)
#define USTRACE__DESC_ustrace_u16(x) USTRACE__FIXED(x, USTRACE_TYPE_U16)
#define USTRACE__DESC_ustrace_u32(x) USTRACE__FIXED(x, USTRACE_TYPE_U32)
#define USTRACE__DESC_ustrace_u64(x) USTRACE__FIXED(x, USTRACE_TYPE_U64)
#define USTRACE__DESC_ustrace_float(x) USTRACE__FIXED(x, USTRACE_TYPE_FLOAT)
#define USTRACE__DESC_ustrace_double(x) USTRACE__FIXED(x, USTRACE_TYPE_DOUBLE)
#define USTRACE__DESC_ustrace_bool(x) USTRACE__FIXED(x, USTRACE_TYPE_BOOL)
#define USTRACE__DESC_ustrace_string(x) USTRACE__FIXED(x, USTRACE_TYPE_STRING)
#define USTRACE__DESC_ustrace_bytes(x) USTRACE__FIXED(x, USTRACE_TYPE_BYTES)
#define USTRACE__DESC_ustrace_enum(labels, x)                                                   \
    { #x, USTRACE_TYPE_ENUM,                                                                     \
      (uint32_t)(sizeof(ustrace__labels_##labels) / sizeof(ustrace__labels_##labels[0])),       \
      ustrace__labels_##labels }

#define USTRACE__PARAM_ustrace_i8(x) int8_t x
#define USTRACE__PARAM_ustrace_i16(x) int16_t x
#define USTRACE__PARAM_ustrace_i32(x) int32_t x
#define USTRACE__PARAM_ustrace_i64(x) int64_t x
#define USTRACE__PARAM_ustrace_u8(x) uint8_t x
#define USTRACE__PARAM_ustrace_u16(x) uint16_t x
#define USTRACE__PARAM_ustrace_u32(x) uint32_t x
#define USTRACE__PARAM_ustrace_u64(x) uint64_t x
#define USTRACE__PARAM_ustrace_float(x) float x
#define USTRACE__PARAM_ustrace_double(x) double x
#define USTRACE__PARAM_ustrace_bool(x) bool x
#define USTRACE__PARAM_ustrace_string(x) const char *x
#define USTRACE__PARAM_ustrace_bytes(x) const void *x, uint32_t x##_len
#define USTRACE__PARAM_ustrace_enum(labels, x) int32_t x

#define USTRACE__VALUE(x) { &x, sizeof(x) }
#define USTRACE__ARG_ustrace_i8(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_i16(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_i32(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_i64(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_u8(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_u16(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_u32(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_u64(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_float(x) USTRACE__VALUE(x)
#define USTRACE__ARG_ustrace_double(x) USTRACE__VALUE(x)
/* bool is one byte holding 0 or 1 in C and C++ alike. */
#define USTRACE__ARG_ustrace_bool(x) { &x, 1 }
#define USTRACE__ARG_ustrace_string(x) ustrace__string_arg(x)
#define USTRACE__ARG_ustrace_bytes(x) { &x##_len, 4 }, { x, x##_len }
#define USTRACE__ARG_ustrace_enum(labels, x) USTRACE__VALUE(x)

/* Field list of USTRACE_EVENT. */
#define USTRACE_FIELDS(...) (__VA_ARGS__)

/* Labels of an enumeration field: USTRACE_ENUM_LABELS(name, { "label", value }, ...). */
#define USTRACE_ENUM_LABELS(name, ...)                                                          \
    static const struct ustrace_enum_label ustrace__labels_##name[] = { __VA_ARGS__ }

/* Declares event provider:name with log level `level` and its fields. */
#define USTRACE_EVENT(provider, name, level, fields)                                            \
    static const struct ustrace_field ustrace__fields_##provider##_##name[] = {                 \
        USTRACE__MAPC(USTRACE__DESC, USTRACE__UNPAREN fields)};                                \
    static struct ustrace_event ustrace__event_##provider##_##name = {                          \
        0, #provider, #name, (int32_t)(level),                                                  \
        (uint32_t)(sizeof(ustrace__fields_##provider##_##name) /                                \
                   sizeof(ustrace__fields_##provider##_##name[0])),                             \
        ustrace__fields_##provider##_##name, 0};                                                \
    static struct ustrace_event *ustrace__ptr_##provider##_##name                               \
        __attribute__((section("ustrace_events"), used)) = &ustrace__event_##provider##_##name; \
    static inline void ustrace__emit_##provider##_##name(                                       \
        USTRACE__MAPC(USTRACE__PARAM, USTRACE__UNPAREN fields))                                 \
    {                                                                                           \
        const struct ustrace_arg ustrace__args[] = {                                            \
            USTRACE__MAPC(USTRACE__ARG, USTRACE__UNPAREN fields)};                             \
        ustrace_record(&ustrace__event_##provider##_##name, ustrace__args,                      \
                       (uint32_t)(sizeof(ustrace__args) / sizeof(ustrace__args[0])));           \
    }                                                                                           \
    struct ustrace__semicolon_##provider##_##name

/* Records provider:name with its arguments if any session enables it. */
#define ustrace_tracepoint(provider, name, ...)                                                 \
    do {                                                                                        \
        if (USTRACE__ENABLED(ustrace__event_##provider##_##name))                               \
            ustrace__emit_##provider##_##name(__VA_ARGS__);                                     \
    } while (0)

static inline void ustrace__tracef(const char *format, ...) __attribute__((format(printf, 1, 2)));
static inline void ustrace__tracef(const char *format, ...)
{
    char message[USTRACE_TRACEF_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    ustrace_tracef_record(message);
}

/* Records a ustrace:tracef event (one string field, msg) formatted as printf does. */
#define ustrace_tracef(...)                                                                     \
    do {                                                                                        \
        if (USTRACE__UNLIKELY(__atomic_load_n(&ustrace_tracef_state, __ATOMIC_RELAXED)))        \
            ustrace__tracef(__VA_ARGS__);                                                       \
    } while (0)

/* Each translation unit registers its DSO's events (the section's bounds are the
 * DSO's own; libustrace skips events registered already) before main(), or when
 * dlopen() loads the library. */
extern struct ustrace_event *__start_ustrace_events[] __attribute__((weak, visibility("hidden")));
extern struct ustrace_event *__stop_ustrace_events[] __attribute__((weak, visibility("hidden")));
static void ustrace__register_dso(void) __attribute__((constructor, used));
static void ustrace__register_dso(void)
{
    struct ustrace_event **start = __start_ustrace_events;
    struct ustrace_event **stop = __stop_ustrace_events;
    if (start != stop)
        ustrace_register_events(start, (size_t)(stop - start));
}

#ifdef __cplusplus
}
#endif

#endif /* USTRACE_USTRACE_H */

/* The few thread primitives the replay's num_threads needs, on POSIX threads
 * or Win32 (no OpenMP: it is not there by default with Apple clang or MSVC,
 * and it would own the threads between calls).  Threads are started by one
 * replay call and joined before it returns (nothing outlives a call, nothing
 * to tidy up after a fork).
 */
#ifndef FASTGRAD_REPLAY_THREADS_H
#define FASTGRAD_REPLAY_THREADS_H

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <process.h>

typedef HANDLE fg_thread_t;
typedef CRITICAL_SECTION fg_mutex_t;
typedef CONDITION_VARIABLE fg_cond_t;

typedef struct { void (*fn)(void *); void *arg; } fg_thread_start_t;

static unsigned __stdcall fg_thread_tramp(void *p)
{
    fg_thread_start_t *s = (fg_thread_start_t *)p;
    s->fn(s->arg);
    return 0;
}

/* start fn(arg) in a new thread; s must live until the thread is joined;
 * 0 on success */
static int fg_thread_start(fg_thread_t *t, fg_thread_start_t *s, void (*fn)(void *),
                           void *arg)
{
    s->fn = fn;
    s->arg = arg;
    *t = (HANDLE)_beginthreadex(NULL, 0, fg_thread_tramp, s, 0, NULL);
    return *t == 0 ? -1 : 0;
}
static void fg_thread_join(fg_thread_t t) { WaitForSingleObject(t, INFINITE); CloseHandle(t); }
static int fg_mutex_init(fg_mutex_t *m) { InitializeCriticalSection(m); return 0; }
static void fg_mutex_destroy(fg_mutex_t *m) { DeleteCriticalSection(m); }
static void fg_mutex_lock(fg_mutex_t *m) { EnterCriticalSection(m); }
static void fg_mutex_unlock(fg_mutex_t *m) { LeaveCriticalSection(m); }
static int fg_cond_init(fg_cond_t *c) { InitializeConditionVariable(c); return 0; }
static void fg_cond_destroy(fg_cond_t *c) { (void)c; }
static void fg_cond_wait(fg_cond_t *c, fg_mutex_t *m) { SleepConditionVariableCS(c, m, INFINITE); }
static void fg_cond_wait_ms(fg_cond_t *c, fg_mutex_t *m, int ms) { SleepConditionVariableCS(c, m, (DWORD)ms); }
static void fg_cond_broadcast(fg_cond_t *c) { WakeAllConditionVariable(c); }
static int fg_atomic_get(volatile int *p) { return (int)InterlockedCompareExchange((volatile LONG *)p, 0, 0); }

#else
#include <pthread.h>
#include <time.h>
#include <errno.h>

typedef pthread_t fg_thread_t;
typedef pthread_mutex_t fg_mutex_t;
typedef pthread_cond_t fg_cond_t;

typedef struct { void (*fn)(void *); void *arg; } fg_thread_start_t;

static void *fg_thread_tramp(void *p)
{
    fg_thread_start_t *s = (fg_thread_start_t *)p;
    s->fn(s->arg);
    return NULL;
}

static int fg_thread_start(fg_thread_t *t, fg_thread_start_t *s, void (*fn)(void *),
                           void *arg)
{
    pthread_attr_t attr;
    int rc;
    s->fn = fn;
    s->arg = arg;
    /* the kernels keep their scratch in buffers the caller allocates: a
     * small stack is enough, but musl's and macOS's default (128/512 KiB)
     * is fine too; ask for 1 MiB everywhere */
    if (pthread_attr_init(&attr) != 0) return -1;
    pthread_attr_setstacksize(&attr, 1 << 20);
    rc = pthread_create(t, &attr, fg_thread_tramp, s);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}
static void fg_thread_join(fg_thread_t t) { pthread_join(t, NULL); }
static int fg_mutex_init(fg_mutex_t *m) { return pthread_mutex_init(m, NULL); }
static void fg_mutex_destroy(fg_mutex_t *m) { pthread_mutex_destroy(m); }
static void fg_mutex_lock(fg_mutex_t *m) { pthread_mutex_lock(m); }
static void fg_mutex_unlock(fg_mutex_t *m) { pthread_mutex_unlock(m); }
static int fg_cond_init(fg_cond_t *c) { return pthread_cond_init(c, NULL); }
static void fg_cond_destroy(fg_cond_t *c) { pthread_cond_destroy(c); }
static void fg_cond_wait(fg_cond_t *c, fg_mutex_t *m) { pthread_cond_wait(c, m); }
static void fg_cond_wait_ms(fg_cond_t *c, fg_mutex_t *m, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(c, m, &ts);
}
static void fg_cond_broadcast(fg_cond_t *c) { pthread_cond_broadcast(c); }
#if defined(__GNUC__) || defined(__clang__)
static int fg_atomic_get(volatile int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
#else
static int fg_atomic_get(volatile int *p) { return *p; }
#endif
#endif

#endif

/* Per-core issue rates behind the measured roof of `toolkit bench` (toolkit/edge/bench/roof.py).

   Built once per machine with the system compiler, for the host's own ISA:
       cc -O2 -march=native -pthread roof.c -o roof
   Usage: roof THREADS SECONDS  →  one JSON object on stdout.

   Each test runs on THREADS threads at once (one per core, pinned), so the clock is the all-core
   clock under load, for SECONDS of thread CPU time per repeat; the best of five repeats is kept,
   because the question is what a core can do, and interruptions only ever lower a rate.
   - clock: a chain of dependent 64-bit adds (one cycle each on every x86 core since the P6), so
     adds per second = cycles per second.
   - int8: VPDPBUSD (u8 × s8 → s32, 4 multiply-adds per 32-bit lane) on 16 independent accumulators,
     enough to cover its latency on two pipes; fp32: VFMADD on 16 accumulators; bf16: VDPBF16PS
     (2 multiply-adds per 32-bit lane). The widest form the compiler was allowed (-march=native)
     is used and named in the output.
   Instructions per cycle = instruction rate / clock on the same thread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define REPEATS 5

typedef double (*test_fn)(double seconds, double *sink);

/* The calling thread's CPU time: a core shared with other processes (time slices taken away)
   lowers neither the clock nor an issue rate measured this way. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
#define ADD8 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
static double clock_test(double seconds, double *sink) {
    uint64_t x = 0, calls = 0;
    double start = now(), elapsed = 0;
    do {
        for (int rep = 0; rep < 1000; rep++) __asm__ volatile(ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 : "+r"(x));
        calls += 1000;
        elapsed = now() - start;
    } while (elapsed < seconds);
    *sink += (double)x;
    return (double)calls * 64 / elapsed;
}
#define CLOCK_KNOWN 1
#else
static double clock_test(double seconds, double *sink) { (void)seconds; (void)sink; return 0; }
#define CLOCK_KNOWN 0
#endif

/* Independent accumulators: enough to cover each instruction's latency on two pipes. With AVX-512
   there are 32 vector registers (16 accumulators fit beside the two operands); without, 16. */
#if defined(__AVX512F__)
#define ACC 16
#define UNROLL(s) s(0) s(1) s(2) s(3) s(4) s(5) s(6) s(7) s(8) s(9) s(10) s(11) s(12) s(13) s(14) s(15)
#define KEEP "+v"
#else
#define ACC 12
#define UNROLL(s) s(0) s(1) s(2) s(3) s(4) s(5) s(6) s(7) s(8) s(9) s(10) s(11)
#define KEEP "+x"
#endif

/* A test function: ACC accumulators updated by one instruction each per step; the empty asm keeps
   every accumulator in a register and stops the compiler from folding the chain. */
#define VECTOR_TEST(name, init, op, first, setup)                                  \
    static double name(double seconds, double *sink) {                                 \
        setup;                                                                          \
        UNROLL(init)                                                                    \
        double start = now(), elapsed = 0, total = 0;                                   \
        uint64_t calls = 0;                                                             \
        do {                                                                            \
            for (int rep = 0; rep < 1000; rep++) { UNROLL(op) }                         \
            calls += 1000;                                                              \
            elapsed = now() - start;                                                    \
        } while (elapsed < seconds);                                                    \
        UNROLL(first)                                                                   \
        *sink += total;                                                                 \
        return (double)calls * ACC / elapsed;                                           \
    }
#define NO_TEST(name) static double name(double s, double *k) { (void)s; (void)k; return 0; }

#if defined(__AVX512VNNI__) && defined(__AVX512F__)
#define INT8_NAME "VPDPBUSD zmm (AVX-512 VNNI)"
#define INT8_MACS 64
#define I_INIT(i) __m512i acc##i = _mm512_set1_epi32(i);
#define I_OP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b); __asm__ volatile("" : KEEP(acc##i));
#define I_FIRST(i) total += _mm512_cvtsi512_si32(acc##i);
VECTOR_TEST(int8_test, I_INIT, I_OP, I_FIRST, __m512i a = _mm512_set1_epi8(1); __m512i b = a)
#elif defined(__AVXVNNI__)
#define INT8_NAME "VPDPBUSD ymm (AVX-VNNI)"
#define INT8_MACS 32
#define I_INIT(i) __m256i acc##i = _mm256_set1_epi32(i);
#define I_OP(i) acc##i = _mm256_dpbusd_avx_epi32(acc##i, a, b); __asm__ volatile("" : KEEP(acc##i));
#define I_FIRST(i) total += _mm256_cvtsi256_si32(acc##i);
VECTOR_TEST(int8_test, I_INIT, I_OP, I_FIRST, __m256i a = _mm256_set1_epi8(1); __m256i b = a)
#else
#define INT8_NAME ""
#define INT8_MACS 0
NO_TEST(int8_test)
#endif

#if defined(__AVX512F__)
#define FP32_NAME "VFMADD231PS zmm (AVX-512F)"
#define FP32_MACS 16
#define F_INIT(i) __m512 acc##i = _mm512_set1_ps((float)i);
#define F_OP(i) acc##i = _mm512_fmadd_ps(acc##i, a, b); __asm__ volatile("" : KEEP(acc##i));
#define F_FIRST(i) total += _mm512_cvtss_f32(acc##i);
VECTOR_TEST(fp32_test, F_INIT, F_OP, F_FIRST, __m512 a = _mm512_set1_ps(1.0f); __m512 b = _mm512_set1_ps(1e-7f))
#elif defined(__FMA__) && defined(__AVX__)
#define FP32_NAME "VFMADD231PS ymm (FMA3)"
#define FP32_MACS 8
#define F_INIT(i) __m256 acc##i = _mm256_set1_ps((float)i);
#define F_OP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b); __asm__ volatile("" : KEEP(acc##i));
#define F_FIRST(i) total += _mm256_cvtss_f32(acc##i);
VECTOR_TEST(fp32_test, F_INIT, F_OP, F_FIRST, __m256 a = _mm256_set1_ps(1.0f); __m256 b = _mm256_set1_ps(1e-7f))
#else
#define FP32_NAME ""
#define FP32_MACS 0
NO_TEST(fp32_test)
#endif

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define BF16_NAME "VDPBF16PS zmm (AVX-512 BF16)"
#define BF16_MACS 32
#define B_INIT(i) __m512 acc##i = _mm512_set1_ps((float)i);
#define B_OP(i) acc##i = _mm512_dpbf16_ps(acc##i, a, b); __asm__ volatile("" : KEEP(acc##i));
#define B_FIRST(i) total += _mm512_cvtss_f32(acc##i);
/* bf16 1.0 (0x3f80) times bf16 2^-24 (0x3380): the accumulators grow too slowly to overflow. */
VECTOR_TEST(bf16_test, B_INIT, B_OP, B_FIRST,
            __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80); __m512bh b = (__m512bh)_mm512_set1_epi16(0x3380))
#else
#define BF16_NAME ""
#define BF16_MACS 0
NO_TEST(bf16_test)
#endif

enum { CLOCK, INT8, FP32, BF16, TESTS };
static const test_fn TEST_FNS[TESTS] = {clock_test, int8_test, fp32_test, bf16_test};

typedef struct {
    int cpu;
    double seconds;
    pthread_barrier_t *barrier;
    double best[TESTS];
    double sink;
} worker_t;

static void *worker(void *arg) {
    worker_t *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    for (int t = 0; t < TESTS; t++) {
        w->best[t] = 0;
        for (int r = 0; r < REPEATS; r++) {
            /* Every thread starts each repeat together, so all cores are loaded while any is timed. */
            pthread_barrier_wait(w->barrier);
            double rate = TEST_FNS[t](w->seconds, &w->sink);
            if (rate > w->best[t]) w->best[t] = rate;
        }
    }
    return NULL;
}

static void print_list(const char *key, worker_t *w, int n, int test, const char *tail) {
    printf("\"%s\": [", key);
    for (int i = 0; i < n; i++) printf("%s%.6e", i ? ", " : "", w[i].best[test]);
    printf("]%s", tail);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 0.05;
    if (threads < 1 || threads > 1024 || seconds <= 0) {
        fprintf(stderr, "usage: roof THREADS SECONDS\n");
        return 2;
    }
    cpu_set_t allowed;
    int cpus[1024], ncpu = 0;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE && ncpu < 1024; c++)
            if (CPU_ISSET(c, &allowed)) cpus[ncpu++] = c;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    worker_t *w = calloc((size_t)threads, sizeof(worker_t));
    pthread_t *ids = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads; i++) {
        w[i].cpu = ncpu ? cpus[i % ncpu] : -1;
        w[i].seconds = seconds;
        w[i].barrier = &barrier;
        pthread_create(&ids[i], NULL, worker, &w[i]);
    }
    double sink = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        sink += w[i].sink;
    }
    printf("{\"threads\": %d, \"seconds\": %g, \"repeats\": %d, \"clock_known\": %s, ",
           threads, seconds, REPEATS, CLOCK_KNOWN ? "true" : "false");
    printf("\"int8\": {\"instruction\": \"%s\", \"macs_per_instruction\": %d, ", INT8_NAME, INT8_MACS);
    print_list("per_thread", w, threads, INT8, "}, ");
    printf("\"fp32\": {\"instruction\": \"%s\", \"macs_per_instruction\": %d, ", FP32_NAME, FP32_MACS);
    print_list("per_thread", w, threads, FP32, "}, ");
    printf("\"bf16\": {\"instruction\": \"%s\", \"macs_per_instruction\": %d, ", BF16_NAME, BF16_MACS);
    print_list("per_thread", w, threads, BF16, "}, ");
    print_list("clock_hz", w, threads, CLOCK, ", ");
    /* Printing the sink keeps every accumulator live, so no test loop can be optimised away. */
    printf("\"sink\": %.3e}\n", sink);
    free(w);
    free(ids);
    return 0;
}

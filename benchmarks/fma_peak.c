/* Peak float64 throughput of one core: 12 independent chains of fused multiply-adds
 * on 512-bit (AVX-512F) or 256-bit (AVX2) vectors, enough to cover the latency of
 * the two FMA units of recent Intel cores. Prints one line per width:
 * "<width> <GFLOP/s>", counting 2 flops per lane per FMA, per second of this
 * thread's CPU time (so other processes on the machine do not count).
 *
 *   cc -O2 -mavx512f -mfma fma_peak.c -o fma_peak     (or -mavx2 -mfma)
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define ITERATIONS 100000000L
#define CHAINS(FMA)                                                              \
    a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c);                  \
    a3 = FMA(a3, b, c); a4 = FMA(a4, b, c); a5 = FMA(a5, b, c);                  \
    a6 = FMA(a6, b, c); a7 = FMA(a7, b, c); a8 = FMA(a8, b, c);                  \
    a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);

#define MEASURE(TYPE, SET, FMA, LANES, NAME)                                     \
    {                                                                            \
        TYPE b = SET(0.999999), c = SET(1e-9);                                   \
        TYPE a0 = SET(0.5), a1 = SET(1.5), a2 = SET(2.5), a3 = SET(3.5);         \
        TYPE a4 = SET(4.5), a5 = SET(5.5), a6 = SET(6.5), a7 = SET(7.5);         \
        TYPE a8 = SET(8.5), a9 = SET(9.5), a10 = SET(10.5), a11 = SET(11.5);     \
        double best = 0.0;                                                       \
        for (int repeat = 0; repeat < 3; repeat++) {                             \
            double start = thread_seconds();                                     \
            for (long i = 0; i < ITERATIONS; i++) { CHAINS(FMA) }                \
            double seconds = thread_seconds() - start;                           \
            double rate = 12.0 * 2.0 * LANES * ITERATIONS / seconds / 1e9;       \
            if (rate > best) best = rate;                                        \
        }                                                                        \
        TYPE sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;  \
        printf("%s %.1f %g\n", NAME, best, sum[0]);                              \
    }

int main(void) {
#ifdef __AVX512F__
    MEASURE(__m512d, _mm512_set1_pd, _mm512_fmadd_pd, 8, "avx512")
#endif
#ifdef __FMA__
    MEASURE(__m256d, _mm256_set1_pd, _mm256_fmadd_pd, 4, "avx2")
#endif
    return 0;
}

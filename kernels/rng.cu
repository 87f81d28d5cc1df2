// Counter-based Gaussian noise: the CUDA twin of kernels/rng.py, whose docstring is the contract
// (splitmix64 key and counters, 53-bit uniforms, Box-Muller in double, rounded to float).
// Double precision keeps the numbers equal to NumPy's up to the final float rounding.

#define RNG_GOLDEN 0x9E3779B97F4A7C15ull

__device__ __forceinline__ unsigned long long rng_mix(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// grid-stride over count elements; any 1-D grid works.
extern "C" __global__ void gaussian(float* __restrict__ out, unsigned long long seed, unsigned long long stream,
                                    unsigned long long count)
{
    const unsigned long long key = rng_mix(rng_mix(seed + RNG_GOLDEN) + stream);
    const double inv_2_53 = 1.0 / 9007199254740992.0;
    const double two_pi = 6.283185307179586;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < count;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long a = rng_mix(key + (2ull * i + 1ull) * RNG_GOLDEN);
        const unsigned long long b = rng_mix(key + (2ull * i + 2ull) * RNG_GOLDEN);
        const double u1 = (double)((a >> 11) + 1ull) * inv_2_53;
        const double u2 = (double)(b >> 11) * inv_2_53;
        out[i] = (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
    }
}

// Deterministic two-level sums for the kernels that need a global mean.
//
// Level 1: each block sums its threads (warp shuffles, then one warp over the warp sums) and thread
// 0 writes the block's partial. Level 2: the last block of the grid to finish (an atomic counter,
// one increment per block, no float atomics) sums the partials in a fixed order, in double.
// The result therefore does not depend on block scheduling.
#pragma once

template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ int block_thread()
{
    return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
}

// Sum of v over a block of THREADS threads (a multiple of 32); the result is valid in thread 0.
// scratch holds THREADS / 32 values.
template <int THREADS, typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch)
{
    const int tid = block_thread();
    __syncthreads();  // a previous call's readers of scratch are done
    v = warp_sum(v);
    if ((tid & 31) == 0) scratch[tid >> 5] = v;
    __syncthreads();
    v = tid < THREADS / 32 ? scratch[tid] : T(0);
    if (tid < 32) v = warp_sum(v);
    return v;
}

// Call in every thread after thread 0 wrote this block's partials. True, in every thread, only in
// the last block of the grid to arrive; that block also resets counter to 0 for the next launch.
__device__ __forceinline__ bool last_block_of_grid(unsigned int* counter)
{
    __shared__ bool last;
    if (block_thread() == 0) {
        __threadfence();
        const unsigned int blocks = gridDim.x * gridDim.y * gridDim.z;
        last = atomicAdd(counter, 1u) == blocks - 1u;
        if (last) *counter = 0u;
    }
    __syncthreads();
    return last;
}

// Sum (in double, fixed order) of count partials written by other blocks of this grid; valid in
// thread 0. volatile reads bypass any stale cached copy.
template <int THREADS>
__device__ __forceinline__ double sum_partials(const volatile float* partials, unsigned int count, double* scratch)
{
    double total = 0.0;
    for (unsigned int i = block_thread(); i < count; i += THREADS) total += (double)partials[i];
    return block_sum<THREADS>(total, scratch);
}

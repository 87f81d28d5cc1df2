// Diffusion Information Gain weights: the CUDA twin of kernels/dig.py (the maths is documented there).
//
// Three launches on (K, H, W) float32 arrays, K <= DIG_MAX_SOURCES, and two more per extra pass
// of the window (dig_box_v then dig_box_h between the first two):
//   dig_hbox     loss difference g = (x0_t - c)^2 - (x0_next - c)^2 and its horizontal window sum
//                (one row segment per block, the segment plus its halo staged in shared memory);
//   dig_box_v    vertical window sum / window area: completes one pass's box mean;
//   dig_box_h    horizontal window sum of that mean: starts the next pass (staged as dig_hbox);
//   dig_vbox     vertical window sum -> gains, the per-pixel spread sum_k (gains_k - mean_k)^2,
//                a block partial sum of it, and in the last block to finish the final reduction
//                (fixed order, double) -> tau (or a given absolute tau);
//   dig_softmax  weights = softmax_k(gains / tau).
// Borders are reflect-101 (the caller guarantees radius < H and radius < W).

#include "border.cuh"
#include "reduce.cuh"

#define DIG_MAX_SOURCES 4
#define DIG_SPREAD_EPS 1e-12
#define HBOX_THREADS 128
#define VBOX_X 32
#define VBOX_Y 8
#define VBOX_THREADS (VBOX_X * VBOX_Y)
#define DIG_NEG_INF __int_as_float(0xff800000u)  // -infinity without <math.h>'s INFINITY (NVRTC has no <math.h>)

// Called once the block has staged its row segment and halo in line[]: waits for the whole block,
// then writes each thread's window sum into hsum.
__device__ __forceinline__ void store_row_sums(const float* line, float* __restrict__ hsum, size_t row,
                                               int x_begin, int width, int radius)
{
    __syncthreads();
    const int x = x_begin + threadIdx.x;
    if (x < width) {
        float sum = 0.0f;
        for (int d = 0; d <= 2 * radius; ++d) sum += line[threadIdx.x + d];
        hsum[row + x] = sum;
    }
}

// grid (ceil(W / HBOX_THREADS), H, K), block HBOX_THREADS, shared (HBOX_THREADS + 2 radius) floats.
extern "C" __global__ void dig_hbox(const float* __restrict__ sources, const float* __restrict__ x0_t,
                                    const float* __restrict__ x0_next, float* __restrict__ hsum,
                                    int height, int width, int radius)
{
    extern __shared__ float loss[];
    const int x_begin = blockIdx.x * HBOX_THREADS;
    const size_t row = ((size_t)blockIdx.z * height + blockIdx.y) * width;
    const int span = min(HBOX_THREADS, width - x_begin) + 2 * radius;
    for (int j = threadIdx.x; j < span; j += HBOX_THREADS) {
        const size_t i = row + reflect101(x_begin - radius + j, width);
        const float c = sources[i];
        const float at_t = x0_t[i] - c;
        const float at_next = x0_next[i] - c;
        loss[j] = at_t * at_t - at_next * at_next;
    }
    store_row_sums(loss, hsum, row, x_begin, width, radius);
}

// grid (ceil(W / HBOX_THREADS), H, K), block HBOX_THREADS, shared (HBOX_THREADS + 2 radius) floats.
extern "C" __global__ void dig_box_h(const float* __restrict__ in, float* __restrict__ hsum, int height,
                                     int width, int radius)
{
    extern __shared__ float line[];
    const int x_begin = blockIdx.x * HBOX_THREADS;
    const size_t row = ((size_t)blockIdx.z * height + blockIdx.y) * width;
    const int span = min(HBOX_THREADS, width - x_begin) + 2 * radius;
    for (int j = threadIdx.x; j < span; j += HBOX_THREADS)
        line[j] = in[row + reflect101(x_begin - radius + j, width)];
    store_row_sums(line, hsum, row, x_begin, width, radius);
}

// grid (ceil(W / VBOX_X), ceil(H / VBOX_Y), K), block (VBOX_X, VBOX_Y).
extern "C" __global__ void dig_box_v(const float* __restrict__ hsum, float* __restrict__ mean, int height,
                                     int width, int radius)
{
    const int x = blockIdx.x * VBOX_X + threadIdx.x;
    const int y = blockIdx.y * VBOX_Y + threadIdx.y;
    if (x >= width || y >= height) return;
    const size_t plane = (size_t)blockIdx.z * height * width;
    const float sum = column_window_sum(hsum + plane + x, y, height, width, radius);
    const float inv_area = 1.0f / (float)((2 * radius + 1) * (2 * radius + 1));
    mean[plane + (size_t)y * width + x] = sum * inv_area;
}

// grid (ceil(W / VBOX_X), ceil(H / VBOX_Y)), block (VBOX_X, VBOX_Y).
// partials holds one float per block; counter is an unsigned int that is 0 before the launch (the
// last block resets it); tau receives the softmax temperature: tau_in times the RMS spread if
// relative, else tau_in itself (then the spread's reduction is not needed, but it is cheap and
// keeps one code path).
extern "C" __global__ void dig_vbox(const float* __restrict__ hsum, float* __restrict__ gains,
                                    float* partials, unsigned int* counter, float* tau,
                                    int num_sources, int height, int width, int radius, float tau_in,
                                    int relative)
{
    __shared__ float scratch[VBOX_THREADS / 32];
    __shared__ double scratch64[VBOX_THREADS / 32];
    const int tid = threadIdx.y * VBOX_X + threadIdx.x;
    const int x = blockIdx.x * VBOX_X + threadIdx.x;
    const int y = blockIdx.y * VBOX_Y + threadIdx.y;
    const size_t plane = (size_t)height * width;
    float spread = 0.0f;
    if (x < width && y < height) {
        const float inv_area = 1.0f / (float)((2 * radius + 1) * (2 * radius + 1));
        float g[DIG_MAX_SOURCES];
        float mean = 0.0f;
#pragma unroll
        for (int k = 0; k < DIG_MAX_SOURCES; ++k) {
            if (k < num_sources) {
                g[k] = column_window_sum(hsum + k * plane + x, y, height, width, radius) * inv_area;
                gains[k * plane + (size_t)y * width + x] = g[k];
                mean += g[k];
            }
        }
        mean /= (float)num_sources;
#pragma unroll
        for (int k = 0; k < DIG_MAX_SOURCES; ++k) {
            if (k < num_sources) spread += (g[k] - mean) * (g[k] - mean);
        }
    }
    const float block_total = block_sum<VBOX_THREADS>(spread, scratch);
    if (tid == 0) partials[blockIdx.y * gridDim.x + blockIdx.x] = block_total;
    if (!last_block_of_grid(counter)) return;
    const double total = sum_partials<VBOX_THREADS>(partials, gridDim.x * gridDim.y, scratch64);
    if (tid == 0) {
        const double count = (double)num_sources * (double)plane;
        *tau = relative ? (float)(tau_in * sqrt(total / count) + DIG_SPREAD_EPS) : tau_in;
    }
}

// grid (ceil(H W / 256)), block 256: weights = softmax over k of gains / tau.
extern "C" __global__ void dig_softmax(const float* __restrict__ gains, const float* __restrict__ tau,
                                       float* __restrict__ weights, int num_sources, int num_pixels)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= num_pixels) return;
    const float t = *tau;
    float g[DIG_MAX_SOURCES];
    float top = DIG_NEG_INF;
#pragma unroll
    for (int k = 0; k < DIG_MAX_SOURCES; ++k) {
        if (k < num_sources) {
            g[k] = gains[(size_t)k * num_pixels + p];
            top = fmaxf(top, g[k]);
        }
    }
    float total = 0.0f;
#pragma unroll
    for (int k = 0; k < DIG_MAX_SOURCES; ++k) {
        if (k < num_sources) {
            g[k] = expf((g[k] - top) / t);
            total += g[k];
        }
    }
#pragma unroll
    for (int k = 0; k < DIG_MAX_SOURCES; ++k) {
        if (k < num_sources) weights[(size_t)k * num_pixels + p] = g[k] / total;
    }
}

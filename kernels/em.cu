// DDFM's EM step: the CUDA twin of kernels/em.py (whose docstring explains the model) on (H, W)
// float32 images. One step is three kinds of launch, all with block (EM_X, EM_Y):
//   em_estep     E-step (C, D), the right-hand side of the TV proximal solve, and the two scalar
//                means for the next tau_a, tau_b (block partials + last-block final sum);
//   em_chebyshev one Chebyshev iteration for (I + K1^T K1 + K2^T K2) H = rhs, launched a fixed
//                number of times by the host;
//   em_update    F1, F2 from H and the X update; out = I - X.
// K1, K2 are the circular forward differences of NumPy's FFT solve, so K1^T K1 + K2^T K2 is the
// periodic 5-point Laplacian: A H = 5 H - (its 4 circular neighbours). A's spectrum lies in [1, 9].

#include "border.cuh"
#include "reduce.cuh"

#define EM_X 32
#define EM_Y 8
#define EM_THREADS (EM_X * EM_Y)

// tau_in, tau_out: (tau_a, tau_b). partials: 2 * blocks floats. counter: 0 before the launch.
extern "C" __global__ void em_estep(const float* __restrict__ f_pre, const float* __restrict__ I,
                                    const float* __restrict__ V, const float* __restrict__ F1,
                                    const float* __restrict__ F2, const float* __restrict__ tau_in,
                                    float* __restrict__ tau_out, float* __restrict__ C_out,
                                    float* __restrict__ D_out, float* __restrict__ rhs, float* partials,
                                    unsigned int* counter, int height, int width)
{
    __shared__ float scratch[EM_THREADS / 32];
    __shared__ double scratch64[EM_THREADS / 32];
    const int x = blockIdx.x * EM_X + threadIdx.x;
    const int y = blockIdx.y * EM_Y + threadIdx.y;
    const float tau_a = tau_in[0], tau_b = tau_in[1];
    float inv_c = 0.0f, inv_d = 0.0f;
    if (x < width && y < height) {
        const int i = y * width + x;
        const float Y = I[i] - V[i];
        const float X = f_pre[i] - V[i];
        const float gap = Y - X + 1e-6f;
        const float C = sqrtf(2.0f / tau_a / (gap * gap));
        const float D = fminf(sqrtf(2.0f / tau_b / (X * X + 1e-6f)), 2.0f * C);
        C_out[i] = C;
        D_out[i] = D;
        inv_c = 1.0f / (C + 1e-10f);
        inv_d = 1.0f / (D + 1e-10f);
        const int left = y * width + (x == 0 ? width - 1 : x - 1);
        const int up = (y == 0 ? height - 1 : y - 1) * width + x;
        rhs[i] = (Y - X) + (F1[left] - F1[i]) + (F2[up] - F2[i]);
    }
    const float block_c = block_sum<EM_THREADS>(inv_c, scratch);
    const float block_d = block_sum<EM_THREADS>(inv_d, scratch);
    const unsigned int blocks = gridDim.x * gridDim.y;
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        partials[blockIdx.y * gridDim.x + blockIdx.x] = block_c;
        partials[blocks + blockIdx.y * gridDim.x + blockIdx.x] = block_d;
    }
    if (!last_block_of_grid(counter)) return;
    const double sum_c = sum_partials<EM_THREADS>(partials, blocks, scratch64);
    const double sum_d = sum_partials<EM_THREADS>(partials + blocks, blocks, scratch64);
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        const double count = (double)height * (double)width;
        tau_out[0] = (float)(sum_c / count) + tau_a / 2.0f;
        tau_out[1] = (float)(sum_d / count) + tau_b / 2.0f;
    }
}

// grid (ceil(W / EM_X), ceil(H / EM_Y), 2): plane z of (C, D) -> hsum[z] = the sum of log over the
// 2 radius + 1 pixels of its row centred on each pixel. hsum holds 2 H W floats.
extern "C" __global__ void em_log_hbox(const float* __restrict__ C, const float* __restrict__ D,
                                       float* __restrict__ hsum, int height, int width, int radius)
{
    const int x = blockIdx.x * EM_X + threadIdx.x;
    const int y = blockIdx.y * EM_Y + threadIdx.y;
    if (x >= width || y >= height) return;
    const float* row = (blockIdx.z == 0 ? C : D) + (size_t)y * width;
    float sum = 0.0f;
    for (int d = -radius; d <= radius; ++d) sum += logf(row[reflect101(x + d, width)]);
    hsum[(size_t)blockIdx.z * height * width + (size_t)y * width + x] = sum;
}

// grid as em_log_hbox: plane z of (C, D) = exp(the mean of hsum[z] over the 2 radius + 1 rows
// centred on each pixel), the window's geometric mean.
extern "C" __global__ void em_exp_vbox(const float* __restrict__ hsum, float* __restrict__ C,
                                       float* __restrict__ D, int height, int width, int radius)
{
    const int x = blockIdx.x * EM_X + threadIdx.x;
    const int y = blockIdx.y * EM_Y + threadIdx.y;
    if (x >= width || y >= height) return;
    const float sum = column_window_sum(hsum + (size_t)blockIdx.z * height * width + x, y, height, width, radius);
    const float area = (float)((2 * radius + 1) * (2 * radius + 1));
    (blockIdx.z == 0 ? C : D)[(size_t)y * width + x] = expf(sum / area);
}

// next = omega (cur - prev + (rhs - A cur) / 5) + prev (Chebyshev semi-iteration on Richardson
// with step 1/5; prev = cur = 0 and omega = 1 start it).
extern "C" __global__ void em_chebyshev(const float* __restrict__ rhs, const float* __restrict__ prev,
                                        const float* __restrict__ cur, float* __restrict__ next, float omega,
                                        int height, int width)
{
    const int x = blockIdx.x * EM_X + threadIdx.x;
    const int y = blockIdx.y * EM_Y + threadIdx.y;
    if (x >= width || y >= height) return;
    const int row = y * width;
    const int i = row + x;
    const float neighbours = cur[row + (x == 0 ? width - 1 : x - 1)] + cur[row + (x == width - 1 ? 0 : x + 1)]
                           + cur[(y == 0 ? height - 1 : y - 1) * width + x]
                           + cur[(y == height - 1 ? 0 : y + 1) * width + x];
    const float residual = rhs[i] - (5.0f * cur[i] - neighbours);
    next[i] = omega * (cur[i] - prev[i] + residual / 5.0f) + prev[i];
}

// F1, F2 = shrink * (H - next H along x / y; the last column / row keeps H), then with the E-step's
// C, D (raised to power, then scaled by 2 w_v, 2 w_i when weighted) X = (2 C Y + rho (Y - H)) /
// (2 C + 2 D + rho), out = I - X. w_i, w_v may be null when weighted is 0.
extern "C" __global__ void em_update(const float* __restrict__ I, const float* __restrict__ V,
                                     const float* __restrict__ H, const float* __restrict__ C_in,
                                     const float* __restrict__ D_in, const float* __restrict__ w_i,
                                     const float* __restrict__ w_v, float* __restrict__ F1,
                                     float* __restrict__ F2, float* __restrict__ out, float rho, float shrink,
                                     float power, int weighted, int height, int width)
{
    const int x = blockIdx.x * EM_X + threadIdx.x;
    const int y = blockIdx.y * EM_Y + threadIdx.y;
    if (x >= width || y >= height) return;
    const int i = y * width + x;
    const float h = H[i];
    F1[i] = shrink * (x < width - 1 ? h - H[i + 1] : h);
    F2[i] = shrink * (y < height - 1 ? h - H[i + width] : h);
    float C = C_in[i], D = D_in[i];
    if (power != 1.0f) {
        C = powf(C, power);
        D = powf(D, power);
    }
    if (weighted) {
        D = D * (2.0f * w_i[i]);
        C = C * (2.0f * w_v[i]);
    }
    const float Y = I[i] - V[i];
    const float X = (2.0f * C * Y + rho * (Y - h)) / (2.0f * C + 2.0f * D + rho);
    out[i] = I[i] - X;
}

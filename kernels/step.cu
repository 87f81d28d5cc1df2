// Per-step diffusion arithmetic: the CUDA twins of kernels/step.py. Elementwise over n floats,
// grid (ceil(n / 256)), block 256. The schedule coefficients come from the host, computed in
// float64 and rounded to float32 exactly as the NumPy twins do; with --fmad=false every operation
// rounds as NumPy's, so the results are bit-identical.

// out = c_x * x - c_eps * eps, then clamped to [-1, 1] if clip (NaN stays NaN, as np.clip).
extern "C" __global__ void predict_x0(const float* __restrict__ x, const float* __restrict__ eps,
                                      float* __restrict__ out, float c_x, float c_eps, int clip, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = c_x * x[i] - c_eps * eps[i];
    if (clip) v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
    out[i] = v;
}

// eps = (c_x * x - x0) / c_eps; out = c_x0_prev * x0 + c_eps_prev * eps (DDIM, eta = 0).
extern "C" __global__ void ddim_update(const float* __restrict__ x, const float* __restrict__ x0,
                                       float* __restrict__ out, float c_x, float c_eps, float c_x0_prev,
                                       float c_eps_prev, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float eps = (c_x * x[i] - x0[i]) / c_eps;
    out[i] = c_x0_prev * x0[i] + c_eps_prev * eps;
}

// out = c_x0 * x0 + c_noise * noise; noise (noise_n floats) repeats over x0's leading axes.
extern "C" __global__ void q_sample(const float* __restrict__ x0, const float* __restrict__ noise,
                                    float* __restrict__ out, float c_x0, float c_noise, int noise_n, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = c_x0 * x0[i] + c_noise * noise[i % noise_n];
}

// Array plumbing of the loop: the CUDA twins of all_finite and luma_of in kernels/numpy_ops.py.
// Elementwise, grid (ceil(n / 256)), block 256.

// flag (one unsigned int, set to 1 by the host before the launch) becomes 0 if any of the n floats
// of x is NaN or infinite. Every writer stores the same value, so the race is harmless.
extern "C" __global__ void all_finite(const float* __restrict__ x, unsigned int* __restrict__ flag, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !isfinite(x[i])) *flag = 0u;
}

// out (K, plane) = mean over c of images (K, channels, plane), summed in channel order and divided
// by channels in float, as NumPy's float32 mean over axis 1; n = K * plane.
extern "C" __global__ void luma_of(const float* __restrict__ images, float* __restrict__ out, int channels,
                                   int plane, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int k = i / plane;
    const float* pixel = images + (size_t)k * channels * plane + (i - k * plane);
    float sum = pixel[0];
    for (int c = 1; c < channels; ++c) sum += pixel[(size_t)c * plane];
    out[i] = sum / (float)channels;
}

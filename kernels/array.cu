// Array plumbing of the loop: the CUDA twins of mark_nonfinite and luma_of in kernels/numpy_ops.py.
// Elementwise, grid (ceil(n / 256)), block 256.

// record (one unsigned int on the device) becomes min(record, step) if any of the n floats of x is
// NaN or infinite: the first loop step whose model output was not finite, read by the host only
// once the loop has ended, so that no step waits for the host.
extern "C" __global__ void mark_nonfinite(const float* __restrict__ x, unsigned int* __restrict__ record,
                                          unsigned int step, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !isfinite(x[i])) atomicMin(record, step);
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

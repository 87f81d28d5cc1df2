// DIG at reduced resolution: the CUDA twins of shrink and enlarge in kernels/resample.py, on (K, H, W)
// float32 planes. Elementwise over the output, grid (ceil(n / 256)), block 256.
#include "border.cuh"

// out (K, oh, ow): the mean of the factor x factor block of images (K, height, width) at
// (reflect101(y, height / factor), reflect101(x, width / factor)), summed in row order and divided by
// factor * factor in float; n = K * oh * ow.
extern "C" __global__ void shrink(const float* __restrict__ images, float* __restrict__ out, int height, int width,
                                  int factor, int oh, int ow, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int k = i / (oh * ow), y = (i / ow) % oh, x = i % ow;
    const int sy = reflect101(y, height / factor) * factor, sx = reflect101(x, width / factor) * factor;
    const float* plane = images + (size_t)k * height * width;
    float sum = 0.0f;
    for (int dy = 0; dy < factor; ++dy)
        for (int dx = 0; dx < factor; ++dx) sum += plane[(size_t)(sy + dy) * width + sx + dx];
    out[i] = sum / (float)(factor * factor);
}

// out (K, height, width): bilinear interpolation of the top-left (height / factor, width / factor)
// part of images (K, ih, iw), half-pixel centres (source coordinate (y + 0.5) / factor - 0.5),
// clamped at the edges, as OpenCV's INTER_LINEAR; n = K * height * width.
extern "C" __global__ void enlarge(const float* __restrict__ images, float* __restrict__ out, int ih, int iw,
                                   int factor, int height, int width, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int k = i / (height * width), y = (i / width) % height, x = i % width;
    const int h = height / factor, w = width / factor;
    const float fy = fminf(fmaxf((y + 0.5f) / factor - 0.5f, 0.0f), (float)(h - 1));
    const float fx = fminf(fmaxf((x + 0.5f) / factor - 0.5f, 0.0f), (float)(w - 1));
    const int y0 = (int)fy, x0 = (int)fx, y1 = min(y0 + 1, h - 1), x1 = min(x0 + 1, w - 1);
    const float ay = fy - y0, ax = fx - x0;
    const float* plane = images + (size_t)k * ih * iw;
    const float top = (1.0f - ax) * plane[(size_t)y0 * iw + x0] + ax * plane[(size_t)y0 * iw + x1];
    const float bottom = (1.0f - ax) * plane[(size_t)y1 * iw + x0] + ax * plane[(size_t)y1 * iw + x1];
    out[i] = (1.0f - ay) * top + ay * bottom;
}

// What the box filters of dig.cu and em.cu share. Reflect-101 borders (OpenCV's BORDER_REFLECT_101,
// NumPy's "reflect"): mirror about the edge pixel without repeating it; valid for -n < i < 2n - 1.
#pragma once

__device__ __forceinline__ int reflect101(int i, int n)
{
    i = i < 0 ? -i : i;
    return i >= n ? 2 * n - 2 - i : i;
}

// The vertical pass of a box filter: the sum of column[reflect101(y + d, height) * width] over
// -radius <= d <= radius, in that order (column points at row 0 of one image column; read-only).
__device__ __forceinline__ float column_window_sum(const float* __restrict__ column, int y, int height, int width,
                                                   int radius)
{
    float sum = 0.0f;
    for (int d = -radius; d <= radius; ++d) sum += __ldg(column + (size_t)reflect101(y + d, height) * width);
    return sum;
}

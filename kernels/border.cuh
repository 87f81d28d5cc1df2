// Reflect-101 borders (OpenCV's BORDER_REFLECT_101, NumPy's "reflect"), shared by the box filters
// of dig.cu and em.cu: mirror about the edge pixel without repeating it; valid for -n < i < 2n - 1.
#pragma once

__device__ __forceinline__ int reflect101(int i, int n)
{
    i = i < 0 ? -i : i;
    return i >= n ? 2 * n - 2 - i : i;
}

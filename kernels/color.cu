// DDFM's colour route: the CUDA twins of kernels/color.py on (3, H, W) arrays. The matrices and
// offsets come from the host (color.py's constants). Grid (ceil(HW / 256)), block 256.

// out_c = (m_c0 r + m_c1 g + m_c2 b + offset_c) / 255 in float, m row-major (3, 3).
extern "C" __global__ void rgb_to_ycbcr(const float* __restrict__ x, float* __restrict__ out,
                                        float m00, float m01, float m02, float m10, float m11, float m12,
                                        float m20, float m21, float m22, float o0, float o1, float o2,
                                        int plane)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    const float r = x[i], g = x[plane + i], b = x[2 * plane + i];
    out[i] = (m00 * r + m01 * g + m02 * b + o0) / 255.0f;
    out[plane + i] = (m10 * r + m11 * g + m12 * b + o1) / 255.0f;
    out[2 * plane + i] = (m20 * r + m21 * g + m22 * b + o2) / 255.0f;
}

// The inverse as color.py: v = x * 255 in float, then in double (m (v - offset)), rounded to float.
extern "C" __global__ void ycbcr_to_rgb(const float* __restrict__ x, float* __restrict__ out,
                                        double m00, double m01, double m02, double m10, double m11, double m12,
                                        double m20, double m21, double m22, double o0, double o1, double o2,
                                        int plane)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    const double y = (double)(x[i] * 255.0f) - o0;
    const double cb = (double)(x[plane + i] * 255.0f) - o1;
    const double cr = (double)(x[2 * plane + i] * 255.0f) - o2;
    out[i] = (float)(m00 * y + m01 * cb + m02 * cr);
    out[plane + i] = (float)(m10 * y + m11 * cb + m12 * cr);
    out[2 * plane + i] = (float)(m20 * y + m21 * cb + m22 * cr);
}

package dev.edgekd.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Image to input tensor, exactly as the Python side does it (pipeline/preprocess.py):
 * <ol>
 *   <li>RGB pixels (alpha ignored, not premultiplied; grayscale already replicated by the decoder),
 *       values 0..255 as float32;</li>
 *   <li>resize straight to height x width (no crop, aspect not kept) with bilinear interpolation,
 *       half-pixel centres, no antialiasing, edges clamped: the same numbers as
 *       {@code torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False, antialias=False)};</li>
 *   <li>{@code x * scale}, then {@code (x - mean[c]) / std[c]};</li>
 *   <li>NHWC or NCHW order, batch 1;</li>
 *   <li>optionally quantized to int8/uint8 with the input tensor's scale and zero point.</li>
 * </ol>
 * Android's {@code Bitmap.createScaledBitmap} filters differently (and antialiases on some versions),
 * which moves pixels by up to 50/255 on small images, hence this explicit implementation.
 * Pixels are Android's packed ARGB ints ({@code Bitmap.getPixels}), so this class needs no Android API.
 */
public final class Preprocessor {
    private Preprocessor() {
    }

    /** Source index pairs and weights along one axis, as torch computes them (in float32). */
    static final class AxisWeights {
        final int[] i0;
        final int[] i1;
        final float[] w0;
        final float[] w1;

        AxisWeights(int inSize, int outSize) {
            i0 = new int[outSize];
            i1 = new int[outSize];
            w0 = new float[outSize];
            w1 = new float[outSize];
            float scale = (float) inSize / (float) outSize;
            for (int d = 0; d < outSize; d++) {
                // Half-pixel centres: src = scale * (d + 0.5) - 0.5, rounded ONCE to float, because
                // torch's CPU kernel is compiled with fused multiply-add (measured: a separate float
                // multiply and subtract moves some weights by an ulp, up to 6e-5 after normalisation
                // at 300 -> 224 px). In double the product of two floats and the -0.5 are exact, so
                // this equals fmaf(); Math.fma needs Java 9 / Android 13.
                float src = (float) ((double) scale * (double) (d + 0.5f) - 0.5);
                // negative positions clamp to the first pixel (edge clamp)
                if (src < 0f) {
                    src = 0f;
                }
                int lo = Math.min((int) Math.floor(src), inSize - 1);
                float lambda = Math.min(Math.max(src - lo, 0f), 1f);
                i0[d] = lo;
                i1[d] = lo + (lo < inSize - 1 ? 1 : 0);
                w1[d] = lambda;
                w0[d] = 1f - lambda;
            }
        }
    }

    /**
     * Bilinear resize (half-pixel centres, no antialias) of packed ARGB pixels to an HWC float
     * array of R, G, B values in 0..255.
     */
    public static float[] resizeRgb(int[] argb, int srcW, int srcH, int dstW, int dstH) {
        if (srcW < 1 || srcH < 1 || argb.length < srcW * srcH) {
            throw new IllegalArgumentException("pixel array does not hold " + srcW + "x" + srcH + " pixels");
        }
        AxisWeights xs = new AxisWeights(srcW, dstW);
        AxisWeights ys = new AxisWeights(srcH, dstH);
        float[] out = new float[dstW * dstH * 3];
        for (int y = 0; y < dstH; y++) {
            int row0 = ys.i0[y] * srcW;
            int row1 = ys.i1[y] * srcW;
            float wy0 = ys.w0[y];
            float wy1 = ys.w1[y];
            for (int x = 0; x < dstW; x++) {
                int p00 = argb[row0 + xs.i0[x]];
                int p01 = argb[row0 + xs.i1[x]];
                int p10 = argb[row1 + xs.i0[x]];
                int p11 = argb[row1 + xs.i1[x]];
                float wx0 = xs.w0[x];
                float wx1 = xs.w1[x];
                int o = (y * dstW + x) * 3;
                for (int c = 0; c < 3; c++) {
                    int shift = 16 - 8 * c; // R, G, B bytes of 0xAARRGGBB
                    float top = wx0 * ((p00 >> shift) & 0xFF) + wx1 * ((p01 >> shift) & 0xFF);
                    float bottom = wx0 * ((p10 >> shift) & 0xFF) + wx1 * ((p11 >> shift) & 0xFF);
                    out[o + c] = wy0 * top + wy1 * bottom;
                }
            }
        }
        return out;
    }

    /** Full float preprocessing: returns the input tensor's values in the model's layout. */
    public static float[] toInputTensor(int[] argb, int srcW, int srcH, ModelInfo.InputSpec spec) {
        int h = spec.height;
        int w = spec.width;
        float[] hwc = resizeRgb(argb, srcW, srcH, w, h);
        float[] out = new float[h * w * 3];
        boolean nchw = spec.isNchw();
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int p = y * w + x;
                for (int c = 0; c < 3; c++) {
                    float v = (hwc[p * 3 + c] * spec.scale - spec.mean[c]) / spec.std[c];
                    out[nchw ? c * h * w + p : p * 3 + c] = v;
                }
            }
        }
        return out;
    }

    /** TFLite's rounding (std::round): halves go away from zero. */
    static int roundHalfAwayFromZero(float v) {
        double d = v; // in double, v + 0.5 is exact (in float, 0.49999997f + 0.5f rounds up to 1)
        return (int) (d >= 0 ? Math.floor(d + 0.5) : -Math.floor(-d + 0.5));
    }

    /**
     * Affine quantization {@code q = round(x / scale) + zeroPoint}, clamped to the type's range;
     * {@code signed} selects int8 (-128..127) or uint8 (0..255, stored as the same byte bits).
     */
    public static byte[] quantize(float[] x, float scale, int zeroPoint, boolean signed) {
        if (!(scale > 0f)) {
            throw new IllegalArgumentException("quantization scale must be > 0, got " + scale);
        }
        int lo = signed ? -128 : 0;
        int hi = signed ? 127 : 255;
        byte[] q = new byte[x.length];
        for (int i = 0; i < x.length; i++) {
            int v = roundHalfAwayFromZero(x[i] / scale) + zeroPoint;
            q[i] = (byte) Math.max(lo, Math.min(hi, v));
        }
        return q;
    }

    /**
     * Writes a preprocessed tensor into the interpreter's input buffer: float32 as native-order
     * floats, int8/uint8 quantized with the tensor's own scale and zero point.
     */
    public static ByteBuffer fillInputBuffer(float[] tensor, ModelInfo.InputSpec spec, float qScale, int qZeroPoint,
                                             ByteBuffer buffer) {
        buffer.order(ByteOrder.nativeOrder());
        buffer.rewind();
        if (spec.isQuantized()) {
            buffer.put(quantize(tensor, qScale, qZeroPoint, "int8".equals(spec.dtype)));
        } else {
            for (float v : tensor) {
                buffer.putFloat(v);
            }
        }
        buffer.rewind();
        return buffer;
    }

    /** Bytes the input buffer needs for this spec. */
    public static int inputBytes(ModelInfo.InputSpec spec) {
        return spec.size() * (spec.isQuantized() ? 1 : 4);
    }
}

package dev.edgekd.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.nio.ByteBuffer;

import org.junit.Test;

public class PreprocessorTest {
    private static int argb(int a, int r, int g, int b) {
        return (a << 24) | (r << 16) | (g << 8) | b;
    }

    private static int gray(int v) {
        return argb(255, v, v, v);
    }

    @Test
    public void sameSizeIsIdentityAndAlphaIgnored() {
        int[] px = {argb(0, 10, 20, 30), argb(128, 200, 100, 0)};
        float[] out = Preprocessor.resizeRgb(px, 2, 1, 2, 1);
        assertArrayEquals(new float[] {10, 20, 30, 200, 100, 0}, out, 0f);
    }

    @Test
    public void upsampleUsesHalfPixelCentresAndClampsEdges() {
        // torch: interpolate([0, 100], size=4, bilinear, align_corners=False) = [0, 25, 75, 100]
        float[] out = Preprocessor.resizeRgb(new int[] {gray(0), gray(100)}, 2, 1, 4, 1);
        float[] red = {out[0], out[3], out[6], out[9]};
        assertArrayEquals(new float[] {0, 25, 75, 100}, red, 1e-4f);
    }

    @Test
    public void downsampleHasNoAntialias() {
        // plain bilinear 4 -> 2 samples the centres 0.5 and 2.5: mean of pixel pairs, pixels 0 and 3 half weight
        float[] out = Preprocessor.resizeRgb(new int[] {gray(0), gray(40), gray(80), gray(200)}, 4, 1, 2, 1);
        assertEquals(20f, out[0], 1e-4f);
        assertEquals(140f, out[3], 1e-4f);
        // 8 -> 2: an antialiased resize would average all 8 pixels, plain bilinear looks at 4 of them
        // (centres 1.5 and 5.5), so the bright pixels 1 and 2 come through at full strength
        int[] eight = {gray(0), gray(100), gray(100), gray(0), gray(0), gray(0), gray(0), gray(0)};
        float[] o2 = Preprocessor.resizeRgb(eight, 8, 1, 2, 1);
        assertEquals(100f, o2[0], 1e-4f);
        assertEquals(0f, o2[3], 1e-4f);
    }

    @Test
    public void normalisesAndOrdersNhwcVsNchw() {
        ModelInfo nhwc = TestModels.parse("NHWC", "float32");
        ModelInfo nchw = TestModels.parse("NCHW", "float32");
        // a 3x2 image (model input is width 3, height 2): no resize, only normalisation and layout
        int[] px = new int[6];
        for (int i = 0; i < 6; i++) {
            px[i] = argb(255, 10 * i, 10 * i + 1, 10 * i + 2);
        }
        float[] a = Preprocessor.toInputTensor(px, 3, 2, nhwc.input);
        float[] b = Preprocessor.toInputTensor(px, 3, 2, nchw.input);
        for (int p = 0; p < 6; p++) {
            for (int c = 0; c < 3; c++) {
                float expected = ((10 * p + c) / 255f - nhwc.input.mean[c]) / nhwc.input.std[c];
                assertEquals(expected, a[p * 3 + c], 1e-6f);
                assertEquals(expected, b[c * 6 + p], 1e-6f);
            }
        }
    }

    @Test
    public void quantizesWithScaleAndZeroPoint() {
        float[] x = {0f, 0.25f, -0.25f, 0.75f, 100f, -100f, 0.124f};
        byte[] s = Preprocessor.quantize(x, 0.5f, -3, true);
        // x/0.5 = 0, .5, -.5, 1.5, 200, -200, .248 -> round half away from zero -> 0, 1, -1, 2, clamp, clamp, 0
        assertArrayEquals(new byte[] {-3, -2, -4, -1, 127, -128, -3}, s);
        byte[] u = Preprocessor.quantize(x, 0.5f, 128, false);
        int[] asUnsigned = new int[u.length];
        for (int i = 0; i < u.length; i++) {
            asUnsigned[i] = u[i] & 0xFF;
        }
        assertArrayEquals(new int[] {128, 129, 127, 130, 255, 0, 128}, asUnsigned);
    }

    @Test
    public void fillsFloatAndQuantizedBuffers() {
        ModelInfo f = TestModels.parse("NHWC", "float32");
        ModelInfo q = TestModels.parse("NHWC", "int8");
        float[] t = new float[f.input.size()];
        t[1] = 1.5f;
        ByteBuffer fb = ByteBuffer.allocateDirect(Preprocessor.inputBytes(f.input));
        Preprocessor.fillInputBuffer(t, f.input, 0f, 0, fb);
        assertEquals(18 * 4, fb.capacity());
        assertEquals(1.5f, fb.getFloat(4), 0f);
        ByteBuffer qb = ByteBuffer.allocateDirect(Preprocessor.inputBytes(q.input));
        Preprocessor.fillInputBuffer(t, q.input, 0.5f, 1, qb);
        assertEquals(18, qb.capacity());
        assertEquals(4, qb.get(1));
        assertEquals(1, qb.get(0));
    }
}

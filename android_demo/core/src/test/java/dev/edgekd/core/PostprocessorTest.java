package dev.edgekd.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;

import java.util.List;

import org.junit.Test;

public class PostprocessorTest {
    @Test
    public void softmaxIsStableAndSumsToOne() {
        float[] p = Postprocessor.softmax(new float[] {1000f, 1000f, 999f});
        double e = Math.exp(-1);
        assertEquals(1 / (2 + e), p[0], 1e-6);
        assertEquals(1 / (2 + e), p[1], 1e-6);
        assertEquals(e / (2 + e), p[2], 1e-6);
        for (float v : p) {
            assertFalse(Float.isNaN(v));
        }
        float[] q = Postprocessor.softmax(new float[] {0f, (float) Math.log(3)});
        assertEquals(0.25f, q[0], 1e-6f);
        assertEquals(0.75f, q[1], 1e-6f);
    }

    @Test
    public void topKIsDescendingAndTiesKeepLowerIndex() {
        assertArrayEquals(new int[] {3, 1, 0}, Postprocessor.topKIndices(new float[] {0.1f, 0.5f, 0.1f, 0.9f}, 3));
        assertArrayEquals(new int[] {1, 2}, Postprocessor.topKIndices(new float[] {0f, 2f, 2f, 1f}, 2));
        assertArrayEquals(new int[] {0, 1}, Postprocessor.topKIndices(new float[] {5f, 4f}, 3)); // k > n
        assertArrayEquals(new int[0], Postprocessor.topKIndices(new float[] {5f}, 0));
    }

    @Test
    public void dequantizesSignedAndUnsigned() {
        float[] s = Postprocessor.dequantize(new byte[] {-128, 0, 127}, 0.5f, -1, true);
        assertArrayEquals(new float[] {-63.5f, 0.5f, 64f}, s, 0f);
        float[] u = Postprocessor.dequantize(new byte[] {0, (byte) 128, (byte) 255}, 0.5f, 128, false);
        assertArrayEquals(new float[] {-64f, 0f, 63.5f}, u, 0f);
    }

    @Test
    public void classifyRanksLogitsAndReportsProbabilities() {
        ModelInfo m = TestModels.parse("NHWC", "float32");
        List<Postprocessor.Recognition> top = Postprocessor.classify(new float[] {0f, 2f, 1f, (float) Math.log(0.5)}, m, 3);
        assertEquals(3, top.size());
        assertEquals("defect_1_3", top.get(0).label);
        assertEquals(1, top.get(0).index);
        assertEquals("defect_2_3", top.get(1).label);
        assertEquals("defect_0", top.get(2).label);
        double sum = 1 + Math.exp(2) + Math.exp(1) + 0.5;
        assertEquals(Math.exp(2) / sum, top.get(0).score, 1e-6);
        assertEquals(1 / sum, top.get(2).score, 1e-6);
    }

    @Test(expected = IllegalArgumentException.class)
    public void classifyRefusesWrongOutputLength() {
        Postprocessor.classify(new float[] {1f, 2f}, TestModels.parse("NHWC", "float32"), 3);
    }
}
